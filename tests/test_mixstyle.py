"""MixStyle (training/mixstyle.py): the identity at inference, style mixing in training, and a network that strips
back to the plain MobileNetV2 with the same weights."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")


def _styled(batch_means, batch_stds, seed=0):
    """(B, 6, 6, 3) maps: one shared content pattern, per sample a style (channel mean and std)."""
    content = np.random.default_rng(seed).normal(size=(1, 6, 6, 3))
    content = (content - content.mean(axis=(1, 2), keepdims=True)) / content.std(axis=(1, 2), keepdims=True)
    means = np.asarray(batch_means, np.float64)[:, None, None, :]
    stds = np.asarray(batch_stds, np.float64)[:, None, None, :]
    return (content * stds + means).astype(np.float32)


def test_inference_is_the_identity():
    from training.mixstyle import MixStyle

    x = _styled([[0, 1, 2], [5, 5, 5]], [[1, 2, 3], [1, 1, 1]])
    np.testing.assert_array_equal(np.asarray(MixStyle(p=1.0)(x, training=False)), x)


def test_one_style_in_the_batch_leaves_it_unchanged():
    """Mixing a style with itself gives the same style: a batch of one style passes through (up to eps)."""
    from training.mixstyle import MixStyle

    x = _styled([[1, -2, 0.5]] * 4, [[2, 0.5, 1]] * 4)
    np.testing.assert_allclose(np.asarray(MixStyle(p=1.0)(x, training=True)), x, atol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_mixed_styles_lie_between_the_batch_styles_and_keep_the_content(seed):
    from training.mixstyle import MixStyle

    tf.random.set_seed(seed)
    means, stds = np.array([[0.0, 10, -3], [4, 2, 3]]), np.array([[1.0, 3, 0.5], [2, 1, 4]])
    x = _styled(means, stds, seed)
    out = np.asarray(MixStyle(p=1.0, alpha=0.1)(x, training=True), np.float64)
    mu, sd = out.mean(axis=(1, 2)), out.std(axis=(1, 2))
    assert np.all(mu >= means.min(axis=0) - 1e-3) and np.all(mu <= means.max(axis=0) + 1e-3)
    assert np.all(sd >= stds.min(axis=0) - 1e-3) and np.all(sd <= stds.max(axis=0) + 1e-3)
    # The normalised pattern (the cell) is untouched: only the statistics moved.
    norm = (out - out.mean(axis=(1, 2), keepdims=True)) / out.std(axis=(1, 2), keepdims=True)
    ref = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(norm, ref, atol=1e-3)


def test_probability_zero_never_mixes():
    from training.mixstyle import MixStyle

    x = _styled([[0, 0, 0], [9, 9, 9]], [[1, 1, 1], [3, 3, 3]])
    for _ in range(5):
        np.testing.assert_array_equal(np.asarray(MixStyle(p=0.0)(x, training=True)), x)


@pytest.fixture(scope="module")
def tiny_network():
    from training.model import build_model

    return build_model(3, img_size=32, output_stride=16)


def test_the_network_with_mixstyle_is_the_same_network_at_inference(tiny_network):
    import keras

    from training.mixstyle import DEFAULT_AFTER, same_outputs, strip, with_mixstyle
    from training.model import backbone, build_model, with_feature_output

    mixed = with_mixstyle(tiny_network, p=1.0)
    inserted = [layer.name for layer in backbone(mixed).layers if "mixstyle" in layer.name]
    assert inserted == [f"mixstyle_after_{name}" for name in DEFAULT_AFTER]
    assert same_outputs(tiny_network, mixed, 32) == 0.0
    assert len(with_feature_output(mixed).outputs) == 2  # what the CAM-supervised train step uses
    # Trained weights (here: perturbed) go back into a plain network of the same shape.
    mixed.get_layer("logits").set_weights([w + 1.0 for w in mixed.get_layer("logits").get_weights()])
    plain = strip(mixed, build_model(3, img_size=32, output_stride=16))
    assert same_outputs(plain, mixed, 32) == 0.0
    assert not [layer for layer in backbone(plain).layers if isinstance(layer, keras.layers.Layer) and "mixstyle" in layer.name]


def test_an_unknown_layer_name_is_refused(tiny_network):
    from training.mixstyle import with_mixstyle

    with pytest.raises(ValueError, match="no layer 'block_99_add'"):
        with_mixstyle(tiny_network, after=("block_99_add",))


def test_strip_refuses_another_network(tiny_network):
    from training.mixstyle import strip, with_mixstyle
    from training.model import build_model

    with pytest.raises(ValueError, match="do not match"):
        strip(with_mixstyle(tiny_network), build_model(5, img_size=32, output_stride=16))


@pytest.mark.parametrize("value, message", [("nan", "not a finite number"), ("1.5", "must be <= 1"), ("-0.1", "must be >= 0")])
def test_the_mixing_probability_is_checked(capsys, value, message):
    from training.cam_supervised import parse_args

    with pytest.raises(SystemExit) as exc:
        parse_args(["--init-model", "m.keras", "--data", "d", "--out", "o", "--mixstyle", value])
    assert exc.value.code == 2 and message in capsys.readouterr().err
