"""The AugMix-style consistency term (training/consistency.py): golden Jensen-Shannon values, two appearance views of
one geometry in the training pipeline, and the option's checks."""

import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")


def _js(p1, p2):
    m = 0.5 * (p1 + p2)
    kl = lambda p: float(np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / m), 0.0)))  # noqa: E731
    return 0.5 * kl(p1) + 0.5 * kl(p2)


@pytest.mark.parametrize("p1, p2, expected", [
    ([0.7, 0.2, 0.1], [0.7, 0.2, 0.1], 0.0),  # the same answer: no penalty
    ([1.0, 0.0], [0.0, 1.0], math.log(2)),  # opposite certainties: the bound, log 2
    ([1.0, 0.0], [0.5, 0.5], 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)),
    ([0.6, 0.3, 0.1], [0.2, 0.5, 0.3], None),  # checked against the numpy formula
])
def test_js_divergence_golden(p1, p2, expected):
    from training.consistency import js_divergence

    p1, p2 = np.array(p1), np.array(p2)
    logits = lambda p: np.log(np.clip(p, 1e-12, 1.0))[None].astype(np.float32)  # noqa: E731 - softmax(log p) = p
    got = float(js_divergence(tf.constant(logits(p1)), tf.constant(logits(p2))))
    assert got == pytest.approx(_js(p1, p2) if expected is None else expected, abs=1e-5)


def test_two_views_share_the_geometry_and_differ_in_appearance():
    """With views=2 the pipeline draws the geometry once (the CAM mask fits both views) and the appearance twice."""
    from hematovision.spec import InputSpec
    from training.cam_supervised import _pipeline

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    masks = (rng.random((4, 16, 16, 1)) > 0.5).astype(np.uint8) * 255
    flip = lambda xm: tf.reverse(xm, [2])  # noqa: E731 - a fixed geometry, to check it is applied to both views
    shift = lambda x: tf.clip_by_value(x + tf.random.uniform([tf.shape(x)[0], 1, 1, 1], -0.2, 0.2), 0.0, 1.0)  # noqa: E731
    ds = _pipeline(images, masks, np.arange(4), InputSpec(height=16, width=16), batch_size=4, augment_geometry=flip,
                   appearance=shift, out_size=16, training=True, seed=0, views=2)
    x1, x2, m, y = next(iter(ds))
    assert x1.shape == x2.shape == (4, 16, 16, 3) and m.shape == (4, 16, 16, 1)
    assert not np.allclose(x1.numpy(), x2.numpy())  # independent appearance draws
    order = y.numpy()  # shuffled: compare each sample with its own source image, mirrored
    mirrored = masks[order][:, :, ::-1] / 255.0
    assert np.allclose(m.numpy(), mirrored)
    (one,) = [b for b in _pipeline(images, masks, np.arange(4), InputSpec(height=16, width=16), batch_size=4,
                                   augment_geometry=flip, appearance=shift, out_size=16, training=True, seed=0)]
    assert len(one) == 3  # the default: one view


def test_consistency_with_a_teacher_is_refused_and_the_weight_checked(capsys):
    from training.cam_supervised import _steps, parse_args

    with pytest.raises(SystemExit) as exc:
        parse_args(["--init-model", "m.keras", "--data", "d", "--out", "o", "--consistency", "nan"])
    assert exc.value.code == 2 and "not a finite number" in capsys.readouterr().err
    args = parse_args(["--init-model", "m.keras", "--data", "d", "--out", "o", "--consistency", "12", "--teacher", "t.keras"])
    from training.model import build_model

    with pytest.raises(SystemExit, match="--consistency and --teacher"):
        _steps(build_model(3, img_size=32, output_stride=16), args, {0: 1.0, 1: 1.0, 2: 1.0}, 10)


def test_a_two_view_step_trains_and_reports_its_terms():
    """One compiled step on a tiny network: finite CE, CAM share and JS in [0, log 2], and the weights move."""
    from types import SimpleNamespace

    from training.cam_supervised import _outside_share, trainable
    from training.consistency import two_view_step
    from training.model import build_model

    tf.keras.utils.set_random_seed(0)
    model = build_model(3, img_size=32, output_stride=16)
    args = SimpleNamespace(epochs=1, batch_size=4, lr=1e-3)
    t = trainable(model, args, {0: 1.0, 1: 1.0, 2: 1.0}, 4)
    step = two_view_step(t, weight=12.0, cam_weight=1.0, outside_share=_outside_share)
    rng = np.random.default_rng(0)
    x1 = tf.constant(rng.uniform(-1, 1, (4, 32, 32, 3)), tf.float32)
    x2 = tf.constant(rng.uniform(-1, 1, (4, 32, 32, 3)), tf.float32)
    m = tf.constant((rng.random((4, 32, 32, 1)) > 0.5).astype(np.float32))
    y = tf.constant([0, 1, 2, 0])
    before = [w.numpy().copy() for w in t.two.trainable_variables]
    ce, outside, accuracy, js = (float(v) for v in step(x1, x2, m, y))
    assert np.isfinite(ce) and 0.0 <= outside <= 1.0 and 0.0 <= accuracy <= 1.0 and 0.0 <= js <= math.log(2) + 1e-6
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, t.two.trainable_variables))
