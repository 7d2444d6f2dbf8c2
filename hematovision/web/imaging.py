"""Image sizes for analysis and the Grad-CAM overlay, in 8-bit arithmetic (memory stays at a few bytes per pixel)."""

from __future__ import annotations

import cv2
import numpy as np

#: Longest side, in pixels, of the image the app analyses after classifying it (morphology, 3D, the cached
#: heatmap). Larger uploads are downscaled first (area averaging), so a 40 MP photo costs about what a 1 MP
#: one does; the classifier itself always sees the full image, and the overlay is drawn at full size.
ANALYSIS_SIDE = 1024
#: The heatmap's opacity over the cell when none is chosen (0: the image alone, 1: the heatmap alone).
DEFAULT_OPACITY = 0.45


def analysis_shape(shape):
    """(height, width) of the analysis image: ``shape`` scaled so its longest side is at most ANALYSIS_SIDE."""
    h, w = shape[:2]
    scale = min(1.0, ANALYSIS_SIDE / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def downscale(array):
    """An image or heatmap at the analysis resolution (area averaging); unchanged when it is already that small."""
    h, w = analysis_shape(array.shape)
    if (h, w) == array.shape[:2]:
        return array
    return cv2.resize(array, (w, h), interpolation=cv2.INTER_AREA)


def draw_overlay(rgb, cam, alpha):
    """The Grad-CAM overlay at the image's size, as ``hematovision.cam.overlay`` draws it (JET heatmap blended
    with weight ``alpha``) but without float copies of the full image: the heatmap's colour index is upsampled
    as uint8 and OpenCV blends, so memory stays at a few bytes per pixel (a 40 MP overlay in the core's float
    arithmetic peaks near 2 GB). Equal to the core's overlay up to rounding (tests/test_app.py)."""
    alpha = float(np.clip(alpha, 0.0, 1.0))
    index = np.rint(np.clip(cam, 0.0, 1.0) * 255.0).astype(np.uint8)
    if index.shape != rgb.shape[:2]:
        index = cv2.resize(index, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = cv2.cvtColor(cv2.applyColorMap(index, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    del index
    return cv2.addWeighted(rgb, 1.0 - alpha, heat, alpha, 0.0)
