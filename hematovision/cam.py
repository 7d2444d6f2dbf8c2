"""Class activation maps from the TFLite outputs, in numpy (no TensorFlow on the Pi).

For a head GAP -> (dropout) -> dense, the logit of class c is
    y_c = b_c + sum_k w_kc * (1/Z) sum_ij A_k(i, j),     Z = h * w cells,
so Grad-CAM's channel weight alpha_k^c = mean_ij dy_c/dA_k(i, j) = w_kc / Z and
    Grad-CAM_c = ReLU(sum_k alpha_k^c A_k) = ReLU(sum_k w_kc A_k) / Z,
i.e. CAM (Zhou et al. 2016) up to a positive scale, removed by normalising to [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np


def class_activation_map(features: np.ndarray, weights: np.ndarray, class_index: int) -> np.ndarray:
    """``features`` (h, w, K), ``weights`` (K, C) -> CAM (h, w) in [0, 1]."""
    cam = np.maximum(features.astype(np.float32) @ weights[:, class_index].astype(np.float32), 0.0)
    peak = float(cam.max())
    return cam / peak if peak > 0 else cam


def upsample(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a coarse map to the image size, clipped to [0, 1]."""
    up = cv2.resize(cam.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(up, 0.0, 1.0)


def heatmap(cam: np.ndarray) -> np.ndarray:
    """[0, 1] map -> RGB uint8 with the JET colour map (blue low, red high)."""
    bgr = cv2.applyColorMap(np.rint(np.clip(cam, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, cam: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """Blend the heatmap over an RGB uint8 image: (1 - alpha) * image + alpha * heatmap."""
    if cam.shape[:2] != image.shape[:2]:
        cam = upsample(cam, *image.shape[:2])
    alpha = float(np.clip(alpha, 0.0, 1.0))
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * heatmap(cam).astype(np.float32)
    return np.rint(out).astype(np.uint8)
