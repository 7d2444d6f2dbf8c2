"""Reframe a tightly cropped single cell to PBC-like framing before classifying.

PBC frames put a white cell in the middle of about five red-cell diameters of
smear, the cell spanning roughly 40 % of the frame side. Other labs crop
tighter (zheng1: the cell fills the whole 120 px crop). A network trained on
PBC framing sees such a crop as a cell two to three times too large.
``reframe_cell`` measures the stained object at the centre (its bounding box
from the core's stain-density foreground mask) and, when it spans more than
``fill`` of the frame, pads the image with its own glass colour so that it
spans ``fill``: the cell's pixels are unchanged, only the frame grows. Frames
already looser than ``fill`` are returned as they are (the same array).
"""

from __future__ import annotations

import cv2
import numpy as np

from . import stain

#: Share of the frame side a PBC white cell spans (field.DEFAULT_FILL uses the same).
PBC_FILL = 0.4


def central_object_side(rgb: np.ndarray) -> int:
    """Longer bounding-box side (px) of the stained connected component nearest the frame centre."""
    mask = stain.fill_holes(stain.foreground_mask(rgb)).astype(np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return 0
    h, w = mask.shape
    # Largest components first; of the large ones, the one whose centroid is nearest the centre.
    areas = stats[1:, cv2.CC_STAT_AREA]
    big = np.flatnonzero(areas >= 0.25 * areas.max()) + 1
    dist = np.hypot(centroids[big, 0] - w / 2, centroids[big, 1] - h / 2)
    k = int(big[np.argmin(dist)])
    return int(max(stats[k, cv2.CC_STAT_WIDTH], stats[k, cv2.CC_STAT_HEIGHT]))


def reframe_cell(rgb: np.ndarray, *, fill: float = PBC_FILL) -> np.ndarray:
    """Pad ``rgb`` with its background colour so the central cell spans at most ``fill`` of the side."""
    if not 0.05 <= fill <= 1.0:
        raise ValueError(f"fill must be in [0.05, 1], not {fill}")
    h, w = rgb.shape[:2]
    side = central_object_side(rgb)
    target = int(round(side / fill))
    if side == 0 or target <= max(h, w):
        return rgb
    return pad_to_square(rgb, target)


def frame_to_red_cells(rgb: np.ndarray, red_cell_px: float, *, red_cells: float = 5.0) -> np.ndarray:
    """Pad (or centre-crop) ``rgb`` to a square ``red_cells`` red-cell diameters wide: PBC's physical framing.

    Unlike :func:`reframe_cell`, the scale comes from the red cells (a camera's ``hematovision calibrate``
    value), not from the white cell itself, so a small lymphocyte stays small beside a large monocyte.
    """
    if not (np.isfinite(red_cell_px) and red_cell_px > 0) or not 1.0 <= red_cells <= 50.0:
        raise ValueError(f"red_cell_px must be > 0 and red_cells in [1, 50], not {red_cell_px!r}, {red_cells!r}")
    h, w = rgb.shape[:2]
    side = max(int(round(red_cells * red_cell_px)), 1)
    if side < min(h, w):
        top, left = (h - side) // 2, (w - side) // 2
        return rgb[top:top + side, left:left + side]
    if side == h == w:
        return rgb
    return pad_to_square(rgb, max(side, h, w))


def pad_to_square(rgb: np.ndarray, side: int) -> np.ndarray:
    """``rgb`` centred in a ``side`` x ``side`` square (side >= its height and width) of its own glass colour."""
    h, w = rgb.shape[:2]
    top, left = (side - h) // 2, (side - w) // 2
    colour = [float(v) for v in stain.estimate_background(np.ascontiguousarray(rgb[::2, ::2]))]
    return cv2.copyMakeBorder(rgb, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=colour)
