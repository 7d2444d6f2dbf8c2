"""Frame gates of the station: is a frame worth classifying (quality), and is it a new view (stage motion)?

:func:`assess_quality` skips dark (lamp off), empty (nothing stained) and
out-of-focus frames; :class:`MotionGate` tells a frame showing the same view as
the last classified one (skipped as unchanged) from a stage move, and after a
move smaller than the field recognises the cells already counted (phase
correlation). Used by :mod:`hematovision.station.loop`, which re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..cells import detection

#: Default focus threshold: variance of the Laplacian of the grey frame scaled to
#: 320 px wide. In-focus BCCD fields measure 15-26, PBC cells 70-800; a 2-px blur
#: brings BCCD to 3-6. Calibrate for a camera with ``--min-sharpness 0`` (each
#: frame's sharpness is logged) and pick a value between defocused and focused.
MIN_SHARPNESS = 10.0
#: Mean absolute grey difference (0-255, on a 160 px wide, blurred copy) under
#: which a frame counts as the same view as the last classified one.
MOTION_THRESHOLD = 2.0
#: Fraction of pixels that must be stained for a frame not to be empty.
MIN_STAINED_FRACTION = 0.005
SHARPNESS_WIDTH = 320
MOTION_WIDTH = 160


@dataclass(frozen=True)
class FrameQuality:
    """``status`` is ``ok``, ``dark``, ``empty`` or ``blurry``."""

    status: str
    sharpness: float
    stained_fraction: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image, shrunk to at most 320 px wide."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if grey.shape[1] > SHARPNESS_WIDTH:
        h = max(1, round(grey.shape[0] * SHARPNESS_WIDTH / grey.shape[1]))
        grey = cv2.resize(grey, (SHARPNESS_WIDTH, h), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def assess_quality(rgb: np.ndarray, *, min_sharpness: float = MIN_SHARPNESS) -> FrameQuality:
    """Is the frame worth classifying? Dark (lamp off), empty (nothing stained) or blurry frames are not."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small = grey[::4, ::4]
    bright = float(np.percentile(small, 95))
    stained = float(np.mean(small < bright * 0.85)) if bright > 0 else 0.0
    sharp = sharpness(rgb)
    if bright < 40:
        return FrameQuality("dark", sharp, stained)
    if stained < MIN_STAINED_FRACTION:
        return FrameQuality("empty", sharp, stained)
    if sharp < min_sharpness:
        return FrameQuality("blurry", sharp, stained)
    return FrameQuality("ok", sharp, stained)


@dataclass(frozen=True)
class Motion:
    """How a frame relates to the last classified one.

    ``unchanged``: same view (skip the frame). ``shift``: the stage moved by
    ``(dx, dy)`` pixels and the fields overlap (cells seen before can be
    recognised); None when the view is new or could not be registered.
    """

    unchanged: bool
    difference: float
    shift: tuple[float, float] | None = None


class MotionGate:
    """Remembers the last classified view and its cells; tells unchanged frames and repeated cells apart."""

    def __init__(self, *, threshold: float = MOTION_THRESHOLD):
        self.threshold = threshold
        self._ref: np.ndarray | None = None
        self._scale = 1.0
        self._centroids: list[tuple[float, float, float]] = []  # x, y, radius

    def _small(self, rgb: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, MOTION_WIDTH / grey.shape[1])
        if scale < 1.0:
            size = (MOTION_WIDTH, max(8, round(grey.shape[0] * scale)))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        self._scale = scale
        small = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.0)
        return small - small.mean()

    def check(self, rgb: np.ndarray) -> tuple[Motion, np.ndarray]:
        """The motion since the last :meth:`accept` and the small grey copy to pass back to it."""
        small = self._small(rgb)
        ref = self._ref
        if ref is None or ref.shape != small.shape:
            return Motion(False, float("inf")), small
        diff = float(np.mean(np.abs(small - ref)))
        if diff < self.threshold:
            return Motion(True, diff, (0.0, 0.0)), small
        # Copies: OpenCV 5's phaseCorrelate windows its inputs in place.
        (dx, dy), _ = cv2.phaseCorrelate(ref.copy(), small.copy(), cv2.createHanningWindow(small.shape[::-1], cv2.CV_32F))
        ix, iy = int(round(dx)), int(round(dy))
        h, w = small.shape
        if abs(ix) > w * 0.7 or abs(iy) > h * 0.7:
            return Motion(False, diff), small
        # Verify: the overlapping parts must agree once aligned (current(x) = ref(x - d)).
        cur = small[max(iy, 0):h + min(iy, 0), max(ix, 0):w + min(ix, 0)]
        old = ref[max(-iy, 0):h + min(-iy, 0), max(-ix, 0):w + min(-ix, 0)]
        aligned = float(np.mean(np.abs((cur - cur.mean()) - (old - old.mean()))))
        if aligned < 2.0 * self.threshold:
            return Motion(False, diff, (dx / self._scale, dy / self._scale)), small
        return Motion(False, diff), small

    def accept(self, small: np.ndarray, crops: list[detection.CellCrop]) -> None:
        """Make this frame (as returned by :meth:`check`) and its cells the reference."""
        self._ref = small
        self._centroids = [(c.centroid[0], c.centroid[1], _radius(c)) for c in crops]

    def seen_before(self, crop: detection.CellCrop, motion: Motion) -> bool:
        """True when the stage moved by a known shift and this cell was in the previous field."""
        if motion.shift is None:
            return False
        dx, dy = motion.shift
        x, y = crop.centroid[0] - dx, crop.centroid[1] - dy
        return any((x - px) ** 2 + (y - py) ** 2 <= r * r for px, py, r in self._centroids)


def _radius(crop: detection.CellCrop) -> float:
    x0, y0, x1, y1 = crop.cell_box
    return max(8.0, 0.5 * min(x1 - x0, y1 - y0))
