"""Cross-lab code paths on tiny data: OOD score, BN alignment, simulated lab, non-blood set."""

import json
import shutil

import numpy as np
import pytest

from hematovision import load_model
from hematovision.ood import OODModel, pooled


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

    src = tiny_models["tiny-float32"]
    for f in src.parent.glob("tiny-float32*"):
        shutil.copy(f, tmp_path / f.name)
    clf = load_model(tmp_path / "tiny-float32.json")
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
