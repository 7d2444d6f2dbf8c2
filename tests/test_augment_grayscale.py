"""training.augment.random_grayscale: grey samples are their BT.601 luminance, the others untouched; --grayscale is checked."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="the training augmentations need TensorFlow (requirements-dev.txt)")

from training.augment import random_grayscale  # noqa: E402


def batch(n=64, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(0, 1, (n, 8, 8, 3)).astype(np.float32))


def test_probability_one_makes_every_sample_its_luminance():
    x = batch()
    y = random_grayscale(x, 1.0).numpy()
    luma = (x.numpy() * [0.299, 0.587, 0.114]).sum(axis=-1)
    for c in range(3):
        np.testing.assert_allclose(y[..., c], luma, atol=1e-6)


def test_probability_zero_changes_nothing():
    x = batch()
    np.testing.assert_array_equal(random_grayscale(x, 0.0).numpy(), x.numpy())


def test_a_share_of_the_samples_turn_grey_and_the_rest_keep_their_colour():
    tf.random.set_seed(0)
    x = batch(n=400)
    y = random_grayscale(x, 0.25).numpy()
    grey = np.all(np.ptp(y, axis=-1) < 1e-6, axis=(1, 2))
    np.testing.assert_array_equal(y[~grey], x.numpy()[~grey])
    assert 0.15 < grey.mean() < 0.35


@pytest.mark.parametrize("value,message", [("1.5", "must be <= 1"), ("-0.1", "must be >= 0"), ("nan", "finite")])
def test_the_grayscale_probability_is_checked(capsys, value, message):
    from training.cam_supervised import main

    with pytest.raises(SystemExit):
        main(["--init-model", "x.keras", "--data", "x", "--out", "x", "--grayscale", value])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("level", ["basic", "lab", "crosslab"])
def test_cam_supervised_applies_grayscale_after_the_levels_appearance(level):
    from argparse import Namespace

    from training.cam_supervised import _augmenters

    args = Namespace(augment=level, colour_pool=None, grayscale=1.0)
    _, appearance = _augmenters(args, {})
    y = appearance(batch(n=8)).numpy()
    assert np.ptp(y, axis=-1).max() < 1e-5  # every sample grey
    _, appearance = _augmenters(Namespace(augment=level, colour_pool=None, grayscale=0.0), {})
    assert np.ptp(appearance(batch(n=8)).numpy(), axis=-1).max() > 0.01
