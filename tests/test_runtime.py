import numpy as np
import pytest

from hematovision import ModelFormatError, load_model
from hematovision.runtime import TFLiteModel, dequantize, quantize


@pytest.mark.parametrize("dtype, scale, zp", [(np.int8, 2 / 255, 0), (np.int8, 0.05, -10), (np.uint8, 1 / 128, 128)])
def test_quantize_roundtrip_within_half_step(dtype, scale, zp):
    detail = {"dtype": dtype, "quantization": (scale, zp)}
    info = np.iinfo(dtype)
    lo, hi = scale * (info.min - zp), scale * (info.max - zp)
    x = np.linspace(lo, hi, 101, dtype=np.float32)
    q = quantize(x, detail)
    assert q.dtype == dtype
    assert np.abs(dequantize(q, detail) - x).max() <= scale / 2 + 1e-6


def test_quantize_clips_out_of_range():
    detail = {"dtype": np.int8, "quantization": (0.1, 0)}
    assert quantize(np.array([100.0, -100.0], np.float32), detail).tolist() == [127, -128]


def test_float_tensor_passthrough():
    detail = {"dtype": np.float32, "quantization": (0.0, 0)}
    x = np.array([0.25], np.float32)
    assert quantize(x, detail) is not None and dequantize(quantize(x, detail), detail)[0] == 0.25


@pytest.mark.parametrize("name, in_dtype", [("tiny-float32", np.float32), ("tiny-int8", np.int8)])
def test_float_and_int8_models_classify_discs(tiny_models, disc, name, in_dtype):
    clf = load_model(tiny_models[name])
    assert clf.model.input_detail["dtype"] == in_dtype
    for i, label in enumerate(("red", "green", "blue")):
        pred = clf.predict(disc(label, seed=100 + i))
        assert pred.label == label
        assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert set(pred.probabilities) == {"red", "green", "blue"}
        assert pred.cam.shape == (96, 96) and 0.0 <= pred.cam.min() and pred.cam.max() <= 1.0


def test_int8_agrees_with_float(tiny_models, disc):
    f, q = load_model(tiny_models["tiny-float32"]), load_model(tiny_models["tiny-int8"])
    for seed in range(12):
        img = disc(("red", "green", "blue")[seed % 3], seed=seed)
        pf, pq = f.predict(img, cam=False), q.predict(img, cam=False)
        assert pf.label == pq.label
        assert abs(pf.confidence - pq.confidence) < 0.1


def test_uncertain_flag_follows_threshold(tiny_models):
    clf = load_model(tiny_models["tiny-float32"])
    pred = clf.predict(np.full((64, 64, 3), 245, np.uint8))  # no disc at all
    assert pred.uncertain == (pred.confidence < 0.6)


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"\x00\x00\x00\x00TFL3" + b"\x00" * 64])
def test_not_a_tflite_file(tmp_path, content):
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError):
        TFLiteModel(path)


@pytest.mark.parametrize("k, flip", [(1, False), (2, True), (3, False), (0, True)])
def test_dihedral_tta_is_invariant_and_cam_follows_the_image(tiny_models, disc, tmp_path, k, flip):
    import json
    import shutil

    from hematovision import tta

    src = tiny_models["tiny-float32"]
    for f in src.parent.glob("tiny-float32*"):
        shutil.copy(f, tmp_path / f.name)
    meta = json.loads((tmp_path / "tiny-float32.json").read_text())
    meta["test_time_augmentation"] = "dihedral8"
    (tmp_path / "tiny-float32.json").write_text(json.dumps(meta))
    clf = load_model(tmp_path / "tiny-float32.json")
    img = disc("green", seed=5)  # 96 px -> 32 px: exact 3x3 area averaging, commutes with the symmetries
    a, b = clf.predict(img), clf.predict(np.ascontiguousarray(tta.forward(img, k, flip)))
    for label in clf.labels:
        assert a.probabilities[label] == pytest.approx(b.probabilities[label], abs=1e-5)
    np.testing.assert_allclose(tta.forward(a.cam[..., None], k, flip)[..., 0], b.cam, atol=1e-4)


def test_tta_inverse_undoes_forward():
    from hematovision import tta

    x = np.arange(5 * 5 * 2).reshape(5, 5, 2)
    for k, flip in tta.DIHEDRAL8:
        np.testing.assert_array_equal(tta.inverse(tta.forward(x, k, flip), k, flip), x)
    assert len({tta.forward(x, k, f).tobytes() for k, f in tta.DIHEDRAL8}) == 8
