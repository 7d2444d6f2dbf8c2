"""Mild within-lab jitter views of a lab's labelled cells: a few-shot measurement option (``training.fewshot --jitter-views``).

The question (reports/fewshot-jitter_rule.txt): with k = 10 cells per class the head sees almost none of the
variation one microscope's cells show from slide to slide, so extra views of each labelled cell with a mild random
change of that kind might keep the head from fitting the few cells' accidents. Each jitter view is, in this order:

    zoom z ~ U(0.9, 1.1) about the centre (reflected border)
    Gaussian blur, sigma ~ U(0, 0.8) px (skipped below 0.05)
    hue + U(-0.02, 0.02) of the colour circle, saturation x U(0.85, 1.15)       (OpenCV's full-range HSV)
    x -> x ** gamma, gamma ~ U(0.9, 1.1)                                          (x in [0, 1])
    x -> (x - m) c + m b, contrast c ~ U(0.9, 1.1), brightness b ~ U(0.9, 1.1)    (m: the image's mean)
    one of the 8 dihedral views, at random

milder than training.augment's crosslab level on purpose: it models one lab's own cells, not another lab. The views
join the cell's 8 dihedral views as samples of the labelled cells (head fit, and the OOD reference's extension; a
cell's total weight in the fit is unchanged); the features the classifier pools at inference, and so every test
cell's score, are the dihedral ones. ``adapt`` does not use
this: measured on both zheng sets it did not help (docs/crosslab.md).
"""

from __future__ import annotations

import cv2
import numpy as np

from hematovision import tta
from hematovision.ood import pooled
from hematovision.preprocessing import prepare


def jitter(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One mild random change of an RGB uint8 image (the module docstring's list, in its order)."""
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0, rng.uniform(0.9, 1.1))
    x = cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    sigma = rng.uniform(0, 0.8)
    if sigma > 0.05:
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-0.02, 0.02) * 256) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.85, 1.15), 0, 255)
    x = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB_FULL).astype(np.float32) / 255
    x = x ** rng.uniform(0.9, 1.1)
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.9, 1.1) + mean * rng.uniform(0.9, 1.1)
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def jitter_features(clf, images: list[np.ndarray], views: int, seed: int = 0) -> np.ndarray:
    """Pooled features of ``views`` jitter views per image, (N, views, D); one generator over all images in order."""
    rng = np.random.default_rng(seed)
    fi = clf.spec.outputs.features_index
    rows = []
    for rgb in images:
        row = []
        for _ in range(views):
            x = prepare(jitter(rgb, rng), clf.spec.input)[0]
            k, flip = tta.DIHEDRAL8[rng.integers(8)]
            row.append(pooled(clf.model.run(np.ascontiguousarray(tta.forward(x, k, flip))[None])[fi][0]))
        rows.append(row)
    return np.asarray(rows, np.float64)
