"""Shape of a boolean mask: the one place the cell module measures area, diameter and outline.

Numpy + OpenCV only (the Raspberry Pi core). Every shape number of
:mod:`hematovision.cells` comes from here: the segmentation's compactness
test (:func:`solidity`), the morphology features (:func:`shape_features`), the
central-cell choice and the 3D surface's height (:func:`equivalent_diameter`).

Public API::

    shape_features(mask) -> ShapeFeatures(area, equivalent_diameter, circularity, eccentricity, solidity)
    equivalent_diameter(area) -> float        # diameter of the disc of that area
    solidity(mask) -> float                   # area / convex-hull area
    bounding_box(mask) -> Box                 # (x0, y0, x1, y1), x1/y1 exclusive
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive


@dataclass(frozen=True)
class ShapeFeatures:
    """Size and outline of one mask; every number is 0 for an empty mask.

    ``area`` in pixels; ``equivalent_diameter`` = 2 sqrt(area / pi), the disc of
    the same area; ``circularity`` = 4 pi A / P^2 (1 for a disc); ``eccentricity``
    of the ellipse with the same second moments (0 for a disc); ``solidity`` =
    area / convex-hull area (1 for a convex shape).
    """

    area: int
    equivalent_diameter: float
    circularity: float
    eccentricity: float
    solidity: float


def equivalent_diameter(area: float) -> float:
    """Diameter of the disc whose area is ``area``: ``2 sqrt(area / pi)``."""
    return 2.0 * math.sqrt(area / math.pi)


def shape_features(mask: np.ndarray) -> ShapeFeatures:
    """Area, equivalent diameter, circularity, eccentricity and solidity of a boolean mask."""
    area = int(mask.sum())
    if area == 0:
        return ShapeFeatures(0, 0.0, 0.0, 0.0, 0.0)
    m8 = mask.astype(np.uint8)
    contours = _outer_contours(m8)
    return ShapeFeatures(
        area=area,
        equivalent_diameter=equivalent_diameter(area),
        circularity=min(1.0, 4.0 * math.pi * area / (_perimeter(contours) + math.pi) ** 2),
        eccentricity=_moment_eccentricity(m8),
        solidity=_solidity_of(float(area), contours, m8.shape),
    )


def solidity(mask: np.ndarray) -> float:
    """Area / convex-hull area of a boolean mask (1 for a convex shape, 0 when empty)."""
    area = float(mask.sum())
    if area == 0:
        return 0.0
    return _solidity_of(area, _outer_contours(mask.astype(np.uint8)), mask.shape)


def bounding_box(mask: np.ndarray) -> Box:
    """``(x0, y0, x1, y1)`` of a non-empty boolean mask, x1/y1 exclusive."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _outer_contours(m8: np.ndarray) -> tuple[np.ndarray, ...]:
    """The outer boundary pixels of every component, as OpenCV point chains (no simplification)."""
    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return contours


def _perimeter(contours: tuple[np.ndarray, ...]) -> float:
    """Outline length, without the pixel staircase.

    The raw pixel chain over-measures a curve by ~8 % (staircase); its polygon
    simplification (1 px tolerance) does not. The pixel-count area reaches half
    a pixel beyond the chain through pixel centres, hence ``P + pi`` in the
    circularity of :func:`shape_features`.
    """
    return sum(cv2.arcLength(cv2.approxPolyDP(c, 1.0, True), True) for c in contours)


def _moment_eccentricity(m8: np.ndarray) -> float:
    """Eccentricity of the ellipse with the mask's second moments: ``sqrt(1 - l_min / l_max)``.

    ``l_max, l_min`` are the eigenvalues of the (normalised) central-moment
    matrix ``[[mu20, mu11], [mu11, mu02]]``: ``(mu20 + mu02) / 2 +- root``.
    """
    mom = cv2.moments(m8, binaryImage=True)
    mu20, mu02, mu11 = mom["mu20"] / mom["m00"], mom["mu02"] / mom["m00"], mom["mu11"] / mom["m00"]
    root = math.sqrt(((mu20 - mu02) / 2.0) ** 2 + mu11 ** 2)
    l_max, l_min = (mu20 + mu02) / 2.0 + root, (mu20 + mu02) / 2.0 - root
    return math.sqrt(max(0.0, 1.0 - l_min / l_max)) if l_max > 0 else 0.0


def _solidity_of(area: float, contours: tuple[np.ndarray, ...], shape: tuple[int, ...]) -> float:
    """``area`` / the pixel count of the filled convex hull of ``contours`` (at most 1).

    The hull of the outer boundary pixels is the hull of the whole mask: a
    hull's vertices are extreme points, and those lie on the outer boundary.
    """
    hull_mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(hull_mask, [cv2.convexHull(np.concatenate(contours))], 1)
    return min(1.0, area / max(1.0, float(hull_mask.sum())))
