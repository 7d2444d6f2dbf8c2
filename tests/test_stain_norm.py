"""Reinhard stain normalization: the maths, the JSON round trip, and one path for training and serving."""

import json

import numpy as np
import pytest

from hematovision.errors import ModelFormatError
from hematovision.preprocessing import prepare, resize, standardize
from hematovision.spec import InputSpec
from hematovision.stain_norm import StainReference, fit_reference, lab_stats, normalize_stain
from tests.conftest import copy_model
from tests.tiny_model import disc_image

REF = StainReference(mean=(75.0, 12.0, 6.0), std=(15.0, 8.0, 12.0))


def smear(seed=0, size=64):
    """A pinkish field with a purple 'nucleus': enough structure for non-trivial statistics."""
    return disc_image("red", size=size, rng=np.random.default_rng(seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_normalized_image_has_the_reference_statistics(seed):
    mean, std = lab_stats(normalize_stain(smear(seed), REF))
    np.testing.assert_allclose(mean, REF.mean, atol=1.5)  # uint8 rounding + gamut clipping
    np.testing.assert_allclose(std, REF.std, rtol=0.15)


def test_colour_cast_is_removed():
    img = smear()
    cast = np.clip(img.astype(np.float32) * [1.15, 0.9, 0.75] + [10, 0, -5], 0, 255).astype(np.uint8)  # warm lamp
    before = np.abs(img.astype(int) - cast.astype(int)).mean()
    after = np.abs(normalize_stain(img, REF).astype(int) - normalize_stain(cast, REF).astype(int)).mean()
    assert after < before / 3


@pytest.mark.parametrize("value", [0, 128, 255])
def test_flat_frame_is_not_blown_up(value):
    out = normalize_stain(np.full((32, 32, 3), value, np.uint8), REF)
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)
    assert out.reshape(-1, 3).std(axis=0).max() < 1.0  # sigma floor: no spatial noise amplified


def test_fit_reference_averages_per_image_statistics():
    imgs = [smear(s) for s in range(4)]
    ref = fit_reference(imgs)
    np.testing.assert_allclose(ref.mean, np.mean([lab_stats(i)[0] for i in imgs], axis=0), rtol=1e-5)
    with pytest.raises(ValueError):
        fit_reference([])


def test_input_spec_round_trips_the_reference_through_json():
    spec = InputSpec(height=16, width=16, stain=REF)
    again = InputSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec
    assert InputSpec.from_json(InputSpec(height=16, width=16).to_json()).stain is None


@pytest.mark.parametrize("bad", [{"method": "macenko"}, {"method": "reinhard", "lab_mean": [1, 2]},
                                 {"method": "reinhard", "lab_mean": [1, 2, 3], "lab_std": [1, 0, 1]},
                                 {"method": "reinhard", "lab_mean": "x", "lab_std": [1, 1, 1]}])
def test_bad_reference_is_a_model_format_error(bad):
    with pytest.raises(ModelFormatError):
        InputSpec.from_json({"size": [8, 8], "stain_normalization": bad})


def test_training_and_serving_see_the_same_pixels():
    from training.data import standardized

    spec = InputSpec(height=32, width=32, stain=REF)
    img = smear(size=90)
    served = standardize(img, spec)
    trained = standardized(resize(img, 32, 32)[None], spec)[0]
    np.testing.assert_array_equal(served, trained)
    assert not np.array_equal(served, resize(img, 32, 32))
    x = prepare(img, spec)
    np.testing.assert_allclose(x[0], served.astype(np.float32) * spec.scale + spec.offset)


def test_classifier_applies_the_reference_from_the_model_json(tiny_models, tmp_path):
    import hematovision

    src = tiny_models["tiny-float32"]
    path = copy_model(src, tmp_path)
    meta = json.loads(path.read_text())
    meta["input"]["stain_normalization"] = REF.to_json()
    path.write_text(json.dumps(meta))
    clf = hematovision.load_model(path)
    assert clf.spec.input.stain == REF
    img = smear()
    cast = np.clip(img.astype(np.float32) * [1.2, 0.85, 0.7], 0, 255).astype(np.uint8)
    plain = hematovision.load_model(src)
    gap_plain = np.abs(plain.forward(prepare(img, plain.spec.input))[0] - plain.forward(prepare(cast, plain.spec.input))[0]).max()
    gap_norm = np.abs(clf.forward(prepare(img, clf.spec.input))[0] - clf.forward(prepare(cast, clf.spec.input))[0]).max()
    assert gap_norm < gap_plain
