"""The numpy CAM from the TFLite outputs matches textbook Grad-CAM (tf.GradientTape)."""

import numpy as np
import pytest

from hematovision import cam as cam_maps
from hematovision import load_model
from hematovision.preprocessing import prepare


def test_cam_golden():
    feats = np.zeros((2, 2, 2), np.float32)
    feats[0, 0] = [1, 0]
    feats[1, 1] = [0, 2]
    weights = np.array([[1.0, -1.0], [0.5, 1.0]], np.float32)  # K=2 x C=2
    # class 0: [[1, 0], [0, 1]] ; class 1: [[-1 -> 0, 0], [0, 2]] -> normalised
    np.testing.assert_allclose(cam_maps.class_activation_map(feats, weights, 0), [[1, 0], [0, 1]])
    np.testing.assert_allclose(cam_maps.class_activation_map(feats, weights, 1), [[0, 0], [0, 1]])


def test_overlay_shapes_and_alpha():
    img = np.full((50, 40, 3), 100, np.uint8)
    cam = np.zeros((5, 4), np.float32)
    assert cam_maps.overlay(img, cam, alpha=0.0).tolist() == img.tolist()
    out = cam_maps.overlay(img, cam, alpha=1.0)
    assert out.shape == img.shape and tuple(out[0, 0]) == (0, 0, 128)  # JET at 0 = dark blue


def _pearson(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("name, min_r", [("tiny-float32", 0.99), ("tiny-int8", 0.95)])
def test_numpy_cam_matches_gradient_tape_grad_cam(tiny_models, disc, name, min_r):
    import keras

    from training.gradcam import grad_cam

    model = keras.models.load_model(tiny_models["keras"])
    clf = load_model(tiny_models[name])
    checked = 0
    for seed in range(9):
        img = disc(("red", "green", "blue")[seed % 3], seed=seed)
        x = prepare(img, clf.spec.input)
        ref, c = grad_cam(model, x)
        if ref.max() == 0:
            continue
        pred = clf.predict(img)
        assert clf.labels[c] == pred.label
        ref_up = cam_maps.upsample(ref, *img.shape[:2])
        r = _pearson(ref_up, pred.cam)
        assert r >= min_r, f"seed {seed}: r={r:.3f}"
        assert np.unravel_index(ref.argmax(), ref.shape) == np.unravel_index(
            cam_maps.class_activation_map(clf.model.run(x)[clf.spec.outputs.features_index][0], clf.head_weights, c).argmax(), ref.shape
        )
        checked += 1
    assert checked >= 6
