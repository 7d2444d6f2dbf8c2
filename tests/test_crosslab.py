"""Cross-lab code paths on tiny data: OOD score, BN alignment, simulated lab, non-blood set."""

import json
import shutil

import numpy as np
import pytest

from hematovision import load_model
from hematovision.ood import OODModel, pooled
from tests.conftest import copy_model


def test_ood_scores_far_points_higher_and_roundtrips(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (3, 20))
    labels = np.repeat(np.arange(3), 200)
    feats = centres[labels] + rng.normal(0, 1, (600, 20))
    ood = OODModel.fit(feats, k=8)
    inside = ood.score(centres[labels[:50]] + rng.normal(0, 1, (50, 20)))
    outside = ood.score(rng.normal(0, 1, (50, 20)) * 5)  # no structure of the training subspace
    assert inside.max() < outside.min()
    ood = ood.with_threshold(float(np.percentile(inside, 99)))
    ood.save(tmp_path / "o.npz")
    again = OODModel.load(tmp_path / "o.npz")
    np.testing.assert_allclose(again.score(feats[:5]), ood.score(feats[:5]), rtol=1e-5)
    assert again.threshold == ood.threshold
    assert np.ndim(ood.score(feats[0])) == 0


def test_pooled_is_global_average():
    fmap = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_allclose(pooled(fmap), fmap.mean(axis=(0, 1)))


def test_classifier_flags_out_of_distribution(tiny_models, disc, tmp_path):
    """Fit an OOD reference for the tiny model on disc images; a text-like pattern is flagged."""
    from export.ood import pooled_features
    from hematovision.registry import sha256_file

    clf = load_model(copy_model(tiny_models["tiny-float32"], tmp_path))
    imgs = np.stack([disc(("red", "green", "blue")[i % 3], seed=i) for i in range(150)])
    feats = pooled_features(clf, imgs)
    ood = OODModel.fit(feats, k=4)
    ood = ood.with_threshold(float(np.percentile(ood.score(feats), 99.5)))
    ood.save(tmp_path / "tiny-float32.ood.npz")
    meta = json.loads((tmp_path / "tiny-float32.json").read_text())
    meta["ood"] = {"file": "tiny-float32.ood.npz", "sha256": sha256_file(tmp_path / "tiny-float32.ood.npz"), "threshold": ood.threshold}
    (tmp_path / "tiny-float32.json").write_text(json.dumps(meta))
    clf = load_model(tmp_path / "tiny-float32.json")
    assert clf.predict(disc("red", seed=999)).out_of_distribution is False
    checker = ((np.indices((96, 96)).sum(axis=0) // 4 % 2) * 255).astype(np.uint8)
    weird = clf.predict(np.dstack([checker, 255 - checker, checker]))
    assert weird.out_of_distribution is True and weird.uncertain is True
    (tmp_path / "tiny-float32.ood.npz").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        load_model(tmp_path / "tiny-float32.json")


def test_batchnorm_alignment_maps_target_onto_source_statistics(tiny_models, disc):
    import keras

    from export.adapt import align_batchnorm

    model = keras.models.load_model(tiny_models["keras"])
    src = np.stack([disc(("red", "green", "blue")[i % 3], seed=i, size=32) for i in range(60)]).astype(np.float32) / 127.5 - 1
    # the "other lab": darker, bluish, lower contrast
    tgt = np.clip(src * 0.6 + np.array([-0.3, -0.2, 0.1], np.float32), -1, 1)
    bn = model.get_layer("bn1")
    out_probe = keras.Model(model.input, bn.output)
    src_out = out_probe.predict(src, verbose=0).reshape(-1, bn.output.shape[-1])
    before = out_probe.predict(tgt, verbose=0).reshape(-1, bn.output.shape[-1])
    assert align_batchnorm(model, src, tgt) == 1
    after = out_probe.predict(tgt, verbose=0).reshape(-1, bn.output.shape[-1])
    # After alignment, the target's BN outputs have the source's per-channel mean and std.
    np.testing.assert_allclose(after.mean(0), src_out.mean(0), atol=1e-3)
    np.testing.assert_allclose(after.std(0), src_out.std(0), rtol=1e-3, atol=1e-3)
    assert np.abs(before.mean(0) - src_out.mean(0)).max() > 0.05  # it really was shifted


def test_every_batchnorm_layer_is_aligned_to_the_source_statistics_of_the_trained_network(disc):
    """Two stacked BN layers: after alignment the target's outputs of BOTH match the source's through the network
    as trained (the reference must not be re-measured through layers already adapted to the target)."""
    import keras

    from export.adapt import align_batchnorm

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn_a")(keras.layers.Conv2D(6, 3, name="c1")(inp)))
    x = keras.layers.BatchNormalization(name="bn_b")(keras.layers.Conv2D(5, 3, name="c2")(x))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    src = np.stack([disc(("red", "green", "blue")[i % 3], seed=i, size=32) for i in range(60)]).astype(np.float32) / 127.5 - 1
    for layer in model.layers:  # frozen BN statistics that are those of the source, as after training
        if isinstance(layer, keras.layers.BatchNormalization):
            acts = keras.Model(inp, layer.input).predict(src, verbose=0).reshape(-1, layer.input.shape[-1])
            g, b, _, _ = layer.get_weights()
            layer.set_weights([g, b, acts.mean(0), acts.var(0)])
    tgt = np.clip(src * 0.6 + np.array([-0.3, -0.2, 0.1], np.float32), -1, 1)
    outputs = lambda: keras.Model(inp, [model.get_layer(n).output for n in ("bn_a", "bn_b")])  # noqa: E731
    source_out = [o.reshape(-1, o.shape[-1]) for o in outputs().predict(src, verbose=0)]
    assert align_batchnorm(model, src, tgt) == 2
    for after, reference in zip((o.reshape(-1, o.shape[-1]) for o in outputs().predict(tgt, verbose=0)), source_out):
        np.testing.assert_allclose(after.mean(0), reference.mean(0), atol=2e-3)
        np.testing.assert_allclose(after.std(0), reference.std(0), rtol=2e-3, atol=2e-3)


def test_simulated_lab_is_seeded_and_changes_images(disc):
    from training.simulated_lab import PROFILES, transform_all

    imgs = [disc("red", size=64, seed=i) for i in range(12)]
    a, b = transform_all(imgs, seed=0), transform_all(imgs, seed=0)
    assert [p for p, _ in a] == [PROFILES[i % 6] for i in range(12)]
    for (_, x), (_, y), orig in zip(a, b, imgs):
        assert x.shape == orig.shape and x.dtype == np.uint8
        np.testing.assert_array_equal(x, y)
        assert np.abs(x.astype(int) - orig.astype(int)).mean() > 1


def test_nonblood_set_categories():
    from training.nonblood import CATEGORIES, generate

    g = generate(2, size=64)
    assert {c for c, _ in g} == set(CATEGORIES)
    assert all(img.shape == (64, 64, 3) and img.dtype == np.uint8 for _, img in g)


def _disc_dataset(root, disc, n_per_class=6, size=40):
    import csv

    rows = []
    for label in ("red", "green", "blue"):
        (root / "images" / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            path = f"images/{label}/{label}_{i}.png"
            import cv2

            cv2.imwrite(str(root / path), disc(label, size=size, seed=i)[..., ::-1])
            rows.append({"path": path, "label": label, "split": "train"})
    with open(root / "splits.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["path", "label", "split"])
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.mark.parametrize("stain", [False, True])
def test_adapt_command_exports_a_model_that_records_its_target(tiny_models, disc, tmp_path, stain):
    """export.adapt end to end on tiny data, with and without a stain reference in the model's preprocessing."""
    import cv2

    from export.adapt import main as adapt
    from hematovision.stain_norm import fit_reference

    src_json = copy_model(tiny_models["tiny-float32"], tmp_path / "source-model")
    shutil.copy(tiny_models["keras"], src_json.parent / "tiny.keras")
    meta = json.loads(src_json.read_text())
    meta["float_reference"] = {"file": "tiny.keras"}
    if stain:
        meta["input"]["stain_normalization"] = fit_reference([disc("red", size=32, seed=i) for i in range(6)]).to_json()
    src_json.write_text(json.dumps(meta))
    source_data = _disc_dataset(tmp_path / "discs", disc)
    target = tmp_path / "other-lab"
    target.mkdir()
    for i in range(9):  # the other lab: darker and bluish
        img = np.clip(disc(("red", "green", "blue")[i % 3], size=40, seed=100 + i) * [0.7, 0.75, 1.0], 0, 255).astype(np.uint8)
        cv2.imwrite(str(target / f"cell{i}.png"), img[..., ::-1])
    report = tmp_path / "adapt.json"
    assert adapt(["--source-model", str(src_json), "--source-data", str(source_data), "--target", str(target),
                  "--name", "tiny-adapted", "--out", str(tmp_path / "out"), "--report", str(report)]) == 0
    adapted = load_model(tmp_path / "out" / "tiny-adapted.json")
    a = adapted.spec.raw["adaptation"]
    assert a["n_target_images"] == 9 and a["source_model"] == meta["name"] and a["bn_layers"] == 1
    assert set(a["target_flagged_uncertain"]) == {"before", "after"}
    assert json.loads(report.read_text()) == a
    assert (adapted.spec.input.stain is not None) == stain  # the preprocessing travels with the adapted model
    assert adapted.predict(disc("red", size=40)).label in ("red", "green", "blue")
    assert a["int8_float_argmax_agreement_on_target"] >= 0.9
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert adapt(["--source-model", str(src_json), "--source-data", str(source_data), "--target", str(target),
                  "--name", "tiny-adapted", "--out", str(tmp_path / "out")]) == 1  # never over an existing model
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_adapt_command_refuses_an_int8_export_that_disagrees_with_its_float_model(tiny_models, disc, tmp_path,
                                                                                    monkeypatch, capsys):
    """An aligned model whose int8 export no longer gives the float model's answers is not left to be used."""
    import cv2

    import export.adapt as export_adapt

    src_json = copy_model(tiny_models["tiny-float32"], tmp_path / "source-model")
    shutil.copy(tiny_models["keras"], src_json.parent / "tiny.keras")
    meta = json.loads(src_json.read_text())
    meta["float_reference"] = {"file": "tiny.keras"}
    src_json.write_text(json.dumps(meta))
    target = tmp_path / "other-lab"
    target.mkdir()
    for i in range(6):
        cv2.imwrite(str(target / f"cell{i}.png"), disc(("red", "green", "blue")[i % 3], size=40, seed=i)[..., ::-1])
    out, report = tmp_path / "out", tmp_path / "adapt.json"
    (out).mkdir()
    (out / "keep.json").write_text("{}")  # someone else's file in --out
    monkeypatch.setattr(export_adapt, "int8_agreement", lambda *a, **k: 0.5)
    assert export_adapt.main(["--source-model", str(src_json), "--source-data", str(_disc_dataset(tmp_path / "d", disc)),
                              "--target", str(target), "--name", "tiny-adapted", "--out", str(out),
                              "--report", str(report)]) == 1
    assert "NOT WRITTEN" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.json"]
    assert json.loads(report.read_text())["int8_float_argmax_agreement_on_target"] == 0.5  # the measurement is kept


def test_card_reports_robustness_and_adaptation():
    from export.card import render
    from tests.conftest import ROOT

    meta = json.loads((ROOT / "models" / "wbc.json").read_text())
    adaptation = {"command": "python -m export.adapt --target X", "method": "BN alignment", "n_target_images": 372,
                  "n_source_images": 600, "bn_layers": 52, "target_flagged_uncertain": {"before": 0.981, "after": 1.0}}
    card = render(meta, None, adaptation)
    assert "## Adaptation to a new microscope without labels" in card
    assert "98.10 % before, 100.00 % after" in card and "did not bring" in card
    assert "python -m export.adapt --target X" in card
    assert "int8 export" not in card  # an old report without the agreement: nothing claimed


@pytest.mark.parametrize("agreement, verdict", [(0.86, "withdrew it: it is not a usable model"), (0.97, "enough to keep it")])
def test_card_says_whether_the_adapted_int8_export_kept_its_answers(agreement, verdict):
    from export.card import render
    from tests.conftest import ROOT

    meta = json.loads((ROOT / "models" / "wbc.json").read_text())
    adaptation = {"command": "python -m export.adapt --target X", "method": "BN alignment", "n_target_images": 372,
                  "n_source_images": 600, "bn_layers": 52, "target_flagged_uncertain": {"before": 0.97, "after": 0.95},
                  "int8_float_argmax_agreement_on_target": agreement}
    card = render(meta, None, adaptation)
    assert f"{100 * agreement:.2f} % of the target images (required: 90.00 %)" in card and verdict in card
