"""Measure an image's scale with its own red cells: the red-cell diameter in pixels.

A normal red cell is about 7.5 um across whatever the microscope, so its
diameter in pixels is the ruler every size rule of the cell modules uses
(``red_cell_px``). Without a measurement they assume PBC framing (a red cell
spans a fifth of the frame side); another lab's crops (zheng1: a red cell spans
about a third of its 120 px crop) or a station camera break that assumption.

Method (numpy + OpenCV, the Pi core): red-cell outlines are circles of strong
stain-density gradient, so a circle Hough transform finds them.

1. Work at most :data:`WORK_SIDE` px on the short side (speed; the answer is
   scaled back), on the total stain density (mean optical density: red cells,
   white cells and platelets, not glass), scaled to 0-255 by its 99th
   percentile and smoothed (sigma 1.5 px).
2. ``cv2.HOUGH_GRADIENT_ALT`` keeps circles whose edge agrees with the gradient
   along at least :data:`CIRCLE_PERFECTNESS` of the circumference, radius 4-30 %
   of the short side, centres at least 5 % of it apart.
3. A circle whose disc is more than 10 % nucleus (the core's nucleus mask) is a
   white cell or platelet, not a red cell: dropped.
4. A red cell's pale centre and partial arcs give smaller circles than its
   outline, so the diameter is twice the **upper quartile** of the radii, not
   the median. At least :data:`MIN_CIRCLES` circles or there is no measurement.

Accuracy (``python -m bench.red_cell_scale``, bench/results/red_cell_scale.json):
per image against BCCD's annotated red-cell boxes and PBC's known framing; the
settings above were chosen on the first 60 BCCD fields and 60 PBC images and the
rest are the check. One image is one noisy estimate; :func:`calibrate` takes the
median over several fields of one camera, which is what a station should use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import cv2
import numpy as np

from ..errors import NoRedCellsError
from . import stain

#: Short side (px) the circle search works at; larger images are downscaled first.
WORK_SIDE = 240
#: HOUGH_GRADIENT_ALT's param2: the share of a circle's edge that must agree (1 = a perfect circle).
CIRCLE_PERFECTNESS = 0.8
#: Smallest red-cell radius searched, as a share of the short side (fields up to about 12 red cells across; smaller ones are not measured).
MIN_RADIUS = 0.04
#: Fewest red-cell circles for a per-image measurement.
MIN_CIRCLES = 3
#: A circle whose disc is more than this share nucleus is a nucleated cell, not a red cell.
MAX_NUCLEUS_SHARE = 0.1
#: Quantile of the circle radii taken as the red cell's outline (pale centres and arcs give smaller circles).
OUTLINE_QUANTILE = 75


@dataclass(frozen=True)
class RedCellScale:
    """One image's red-cell diameter and the circles it came from (x, y, radius in the image's pixels)."""

    diameter_px: float
    circles: tuple[tuple[float, float, float], ...]
    image_shape: tuple[int, int]

    @property
    def frame_fraction(self) -> float:
        """Diameter / sqrt(H * W): 0.2 in PBC's framing (what :func:`stain.default_red_cell_px` assumes)."""
        return self.diameter_px / math.sqrt(self.image_shape[0] * self.image_shape[1])


@dataclass(frozen=True)
class Calibration:
    """A camera's red-cell diameter: the median of its fields' measurements."""

    red_cell_px: float
    images_measured: int
    images_not_measured: tuple[str, ...]  # names of the images with too few red-cell circles
    spread: float  # (75th - 25th percentile) / median of the per-image diameters; 0 with one image
    per_image: tuple[tuple[str, RedCellScale], ...]  # each measured image's name and measurement (circles included)


def find_red_cells(rgb: np.ndarray) -> np.ndarray:
    """Red-cell circles (N, 3) as (x, y, radius) in ``rgb``'s pixels; N may be 0."""
    rgb = stain.check_rgb(rgb)
    scale = min(1.0, WORK_SIDE / min(rgb.shape[:2]))
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    density = stain.stain_density(small)
    top = max(float(np.percentile(density, 99)), 1e-3)
    edges = cv2.GaussianBlur(np.clip(density / top * 255, 0, 255).astype(np.uint8), (0, 0), 1.5)
    side = min(edges.shape)
    found = cv2.HoughCircles(edges, cv2.HOUGH_GRADIENT_ALT, dp=1.5, minDist=side * 0.05, param1=100,
                             param2=CIRCLE_PERFECTNESS, minRadius=max(3, int(side * MIN_RADIUS)),
                             maxRadius=int(side * 0.3))
    if found is None:
        return np.zeros((0, 3))
    circles = found[0].astype(np.float64)
    nucleus = stain.nucleus_mask(small)
    keep = [_nucleus_share(nucleus, c) <= MAX_NUCLEUS_SHARE for c in circles]
    return circles[np.array(keep, bool)] / scale


def _nucleus_share(nucleus: np.ndarray, circle: np.ndarray) -> float:
    disc = np.zeros(nucleus.shape, np.uint8)
    cv2.circle(disc, (int(round(circle[0])), int(round(circle[1]))), max(int(round(circle[2])), 1), 1, -1)
    inside = disc > 0
    return float(nucleus[inside].mean()) if inside.any() else 1.0


def measure_red_cell_px(rgb: np.ndarray, *, min_circles: int = MIN_CIRCLES) -> RedCellScale | None:
    """The image's red-cell diameter in px, or None when fewer than ``min_circles`` red cells are clear."""
    circles = find_red_cells(rgb)
    if len(circles) < max(int(min_circles), 1):
        return None
    diameter = 2.0 * float(np.percentile(circles[:, 2], OUTLINE_QUANTILE))
    return RedCellScale(diameter, tuple(tuple(float(v) for v in c) for c in circles), tuple(rgb.shape[:2]))


def calibrate(images: Iterable[tuple[str, np.ndarray]], *, min_circles: int = MIN_CIRCLES) -> Calibration:
    """One camera's ``red_cell_px`` from several of its fields (name, RGB): the median per-image diameter.

    All images must come from the same camera and magnification (the answer is in their pixels).
    Raises :class:`NoRedCellsError` when no image can be measured.
    """
    measured, skipped = [], []
    for name, rgb in images:
        found = measure_red_cell_px(rgb, min_circles=min_circles)
        (measured.append((name, found)) if found else skipped.append(name))
    if not measured:
        raise NoRedCellsError(f"none of the {len(skipped)} image(s) shows {min_circles} or more clear red cells; "
                              "use fields with separate, in-focus red cells (not single-cell crops), or measure "
                              "a red cell's diameter in pixels by hand")
    d = np.array([found.diameter_px for _, found in measured])
    median = float(np.median(d))
    spread = float((np.percentile(d, 75) - np.percentile(d, 25)) / median) if len(d) > 1 else 0.0
    return Calibration(median, len(measured), tuple(skipped), spread, tuple(measured))

