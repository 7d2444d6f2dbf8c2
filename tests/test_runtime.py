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


def test_shipped_tta_runs_as_one_batched_invoke_with_identical_results():
    """Golden check on real PBC images: the one batched invoke equals one invoke per view (int8: bit for bit)."""
    from hematovision.classifier import Classifier
    from tests.conftest import EXAMPLES, ROOT

    if not (ROOT / "models" / "wbc.json").exists():
        pytest.skip("models/wbc.json not shipped")
    batched = load_model("wbc")
    assert batched.spec.tta is not None and len(batched.views) > 1 and batched.views_batched
    per_view = Classifier(batched.spec, batch_views=False)
    assert not per_view.views_batched
    calls = []
    batched.model._invoke = (lambda f: lambda it, x: calls.append(x.shape[0]) or f(it, x))(batched.model._invoke)
    images = sorted((EXAMPLES / "wbc").glob("*.jpg"))
    assert len(images) >= 8
    for path in images:
        a, b = batched.predict(path), per_view.predict(path)
        assert a.label == b.label
        assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) <= 1e-6
        np.testing.assert_allclose(a.cam, b.cam, atol=1e-6)
        assert a.ood_score == pytest.approx(b.ood_score, abs=1e-6)
    assert calls == [len(batched.views)] * len(images)  # one invoke per image, of all its views


def test_run_batch_equals_single_runs_stacked(tiny_models, disc):
    from hematovision.preprocessing import prepare

    clf = load_model(tiny_models["tiny-int8"])
    xs = [prepare(disc(c, seed=i), clf.spec.input) for i, c in enumerate(("red", "green", "blue"))]
    batch = clf.model.run_batch(np.concatenate(xs))
    single = [clf.model.run(x) for x in xs]
    for j, out in enumerate(batch):
        np.testing.assert_array_equal(out, np.concatenate([s[j] for s in single]))
    with pytest.raises(ValueError):
        clf.model.run_batch(xs[0][0])  # no batch axis
    with pytest.raises(ValueError):
        clf.model.run_batch(np.zeros((2, 7, 7, 3), np.float32))


def test_batched_tta_on_a_float_model_and_fallback(tiny_models, disc, tmp_path, monkeypatch):
    import json

    from hematovision.classifier import Classifier
    from tests.conftest import copy_model

    path = copy_model(tiny_models["tiny-float32"], tmp_path)
    meta = json.loads(path.read_text())
    meta["test_time_augmentation"] = "dihedral8"
    path.write_text(json.dumps(meta))
    batched = load_model(path)
    per_view = Classifier(batched.spec, batch_views=False)
    assert batched.views_batched and not per_view.views_batched
    for seed, label in enumerate(("red", "green", "blue")):
        img = disc(label, seed=seed)
        a, b = batched.predict(img), per_view.predict(img)
        for k in a.probabilities:  # float GEMMs may sum in another order over a batch
            assert a.probabilities[k] == pytest.approx(b.probabilities[k], abs=1e-5)
        np.testing.assert_allclose(a.cam, b.cam, atol=1e-5)

    def refuse(self, n):
        raise ModelFormatError("fixed batch size")

    monkeypatch.setattr(TFLiteModel, "prepare_batch", refuse)
    fallback = load_model(path)
    assert not fallback.views_batched and fallback.predict(disc("red", seed=0)).label == "red"


def _with_views(tiny_models, tmp_path, views):
    import json
    import shutil

    src = tiny_models["tiny-float32"]
    for f in src.parent.glob("tiny-float32*"):
        shutil.copy(f, tmp_path / f.name)
    meta = json.loads((tmp_path / "tiny-float32.json").read_text())
    meta["test_time_augmentation"] = views
    (tmp_path / "tiny-float32.json").write_text(json.dumps(meta))
    return tmp_path / "tiny-float32.json"


@pytest.mark.parametrize("name, n", [("none", 1), ("flips2", 2), ("dihedral8", 8)])
def test_each_view_set_averages_exactly_its_views(tiny_models, disc, tmp_path, name, n):
    from hematovision import tta
    from hematovision.preprocessing import prepare

    clf = load_model(_with_views(tiny_models, tmp_path, name))
    assert clf.views == tta.VIEW_SETS[name] and len(clf.views) == n
    x = prepare(disc("red", seed=3), clf.spec.input)
    logits, fmap = clf.forward(x)
    li, fi = clf.spec.outputs.logits_index, clf.spec.outputs.features_index
    outs = [clf.model.run(np.ascontiguousarray(tta.forward(x[0], k, f))[None]) for k, f in tta.VIEW_SETS[name]]
    np.testing.assert_allclose(logits, np.mean([o[li][0] for o in outs], axis=0), atol=1e-5)
    expected = np.mean([tta.inverse(o[fi][0], k, f) for o, (k, f) in zip(outs, tta.VIEW_SETS[name])], axis=0)
    np.testing.assert_allclose(fmap, expected, atol=1e-5)


def test_an_unknown_view_set_is_refused_with_the_known_ones(tiny_models, tmp_path):
    with pytest.raises(ModelFormatError, match="dihedral8.*flips2|flips2.*dihedral8"):
        load_model(_with_views(tiny_models, tmp_path, "rotations3"))
