"""Whole-field mode: find the white cells in a microscope field and crop each like a training image.

The nucleated cells are found by the stain-based segmentation shared with the
morphology module and the 3D surface
(:func:`hematovision.cells.segmentation.find_nucleated_cells`). Each cell
is then cropped to a square centred on the cell, with a margin that reproduces
the framing of the PBC training images: a 360x363 CellaVision frame with the
white cell centred and filling roughly a third to half of its width, which is
about five red-cell diameters. Two ways to get there:

* by default the crop's side is the cell's larger side / :data:`DEFAULT_FILL`
  (0.4): it needs no calibration, but makes every cell fill the crop alike;
* when the red-cell diameter in pixels is known (``red_cell_px``, measured for
  the camera), the side is :data:`FRAME_RED_CELLS` red cells, as in PBC, so
  small and large cells keep their relative size (never less than the cell /
  :data:`MAX_FILL`).

Where the crop reaches past the field's edge it is padded with the field's
background colour, so the cell stays centred.

Also here: the helpers to score detection against ground-truth boxes (IoU
matching, precision and recall), used by ``bench/field_eval.py`` on BCCD.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from . import stain
from .segmentation import CellRegion, find_nucleated_cells
from .shape import Box

#: Fraction of the crop's side that the cell's larger side fills (PBC: ~1/3 to 1/2).
DEFAULT_FILL = 0.4
#: A PBC frame spans about five red-cell diameters (a red cell is ~32 px of 160).
FRAME_RED_CELLS = 5.0
#: With a fixed-scale crop, a very large cell still keeps this margin.
MAX_FILL = 0.8
#: A detected box matches a true one when their intersection over union is at least this.
MIN_IOU = 0.5


@dataclass(frozen=True, eq=False)
class CellCrop:
    """One cell ready for the classifier.

    ``image`` is the square RGB crop with the cell centred; ``box`` is that
    crop in field pixels (it may reach past the field's edge, where the crop is
    padded); ``cell_box`` is the detected cell and ``centroid`` its (x, y).
    """

    image: np.ndarray
    box: Box
    cell_box: Box
    centroid: tuple[float, float]
    score: float = 0.0


def find_cells(rgb: np.ndarray, *, red_cell_px: float | None = None) -> list[CellRegion]:
    """The nucleated (white) cells of a field; see :func:`hematovision.cells.segmentation.find_nucleated_cells`."""
    return find_nucleated_cells(rgb, red_cell_px=red_cell_px)


def framing_box(cell_box: Box, *, fill: float | None = None, side: float | None = None) -> Box:
    """The square crop box centred on ``cell_box``.

    Its side is ``side`` pixels when given (but at least the cell's larger
    side / :data:`MAX_FILL`), else the cell's larger side / ``fill``.
    """
    fill = DEFAULT_FILL if fill is None else fill
    if not 0.05 <= fill <= 1.0:
        raise ValueError(f"fill must be in [0.05, 1] (the fraction of the crop the cell spans), not {fill}.")
    x0, y0, x1, y1 = cell_box
    extent = max(x1 - x0, y1 - y0)
    side = max(int(round(extent / fill if side is None else max(side, extent / MAX_FILL))), 1)
    cx2, cy2 = x0 + x1, y0 + y1  # twice the centre, to stay in integers
    left, top = (cx2 - side) // 2, (cy2 - side) // 2
    return (left, top, left + side, top + side)


def padding_colour(rgb: np.ndarray) -> np.ndarray:
    """The glass colour (:func:`~hematovision.cells.stain.estimate_background`) of every 4th pixel: 16x cheaper."""
    return stain.estimate_background(np.ascontiguousarray(rgb[::4, ::4]))


def cut(rgb: np.ndarray, box: Box, *, fill_value: Sequence[float] | None = None) -> np.ndarray:
    """``rgb[box]``, padded with ``fill_value`` (default: the field's background colour) outside the image."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    inner = rgb[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
    pads = (max(-y0, 0), max(y1 - h, 0), max(-x0, 0), max(x1 - w, 0))
    if not any(pads):
        return np.ascontiguousarray(inner)
    colour = padding_colour(rgb) if fill_value is None else fill_value
    value = [float(v) for v in colour]
    return cv2.copyMakeBorder(inner, *pads, cv2.BORDER_CONSTANT, value=value)


def crop_cells(rgb: np.ndarray, regions: Iterable[CellRegion] | None = None, *, fill: float | None = None,
               red_cell_px: float | None = None) -> list[CellCrop]:
    """One :class:`CellCrop` per nucleated cell of the field (found here unless ``regions`` is given).

    With ``red_cell_px`` (and no ``fill``) the crops have the PBC scale,
    :data:`FRAME_RED_CELLS` red cells wide; otherwise the cell fills ``fill`` of the crop.
    """
    regions = find_cells(rgb, red_cell_px=red_cell_px) if regions is None else list(regions)
    side = FRAME_RED_CELLS * red_cell_px if red_cell_px is not None and fill is None else None
    background = None
    crops = []
    for region in regions:
        box = framing_box(region.bbox, fill=fill, side=side)
        h, w = rgb.shape[:2]
        if background is None and (box[0] < 0 or box[1] < 0 or box[2] > w or box[3] > h):
            background = padding_colour(rgb)
        crops.append(CellCrop(image=cut(rgb, box, fill_value=background), box=box, cell_box=region.bbox,
                              centroid=region.centroid, score=region.score))
    return crops


def whole_frame(rgb: np.ndarray) -> CellCrop:
    """Single-cell mode: the frame already is one centred cell; it is the crop."""
    h, w = rgb.shape[:2]
    box = (0, 0, w, h)
    return CellCrop(image=rgb, box=box, cell_box=box, centroid=(w / 2.0, h / 2.0))


# --- detection scoring ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectionScore:
    """Counts of matched (IoU >= threshold) predicted and true boxes over a set of images."""

    true_positives: int
    false_positives: int
    false_negatives: int
    images: int
    min_iou: float = MIN_IOU

    @property
    def recall(self) -> float:
        n = self.true_positives + self.false_negatives
        return self.true_positives / n if n else 1.0

    @property
    def precision(self) -> float:
        n = self.true_positives + self.false_positives
        return self.true_positives / n if n else 1.0

    def __add__(self, other: "DetectionScore") -> "DetectionScore":
        return DetectionScore(self.true_positives + other.true_positives, self.false_positives + other.false_positives,
                              self.false_negatives + other.false_negatives, self.images + other.images, self.min_iou)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(predicted: Sequence[Box], truth: Sequence[Box], *, min_iou: float = MIN_IOU) -> DetectionScore:
    """Greedy one-to-one matching, best IoU first; a pair counts when IoU >= ``min_iou``."""
    pairs = sorted(((iou(p, t), i, j) for i, p in enumerate(predicted) for j, t in enumerate(truth)), reverse=True)
    used_p, used_t = set(), set()
    for score, i, j in pairs:
        if score < min_iou:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    tp = len(used_p)
    return DetectionScore(tp, len(predicted) - tp, len(truth) - tp, 1, min_iou)


def load_boxes(csv_path: str | os.PathLike, *, cell_type: str | None = None) -> dict[str, list[Box]]:
    """``image -> [boxes]`` of one cell type from a BCCD-style CSV (image,cell_type,xmin,ymin,xmax,ymax).

    Every image named in the file is a key, with an empty list when it has no
    box of that type. BCCD's boxes are Pascal VOC: 1-based, xmax/ymax inclusive
    (they run 1..640), so ``(xmin - 1, ymin - 1, xmax, ymax)`` is the box here.
    """
    cell_type = "WBC" if cell_type is None else cell_type
    out: dict[str, list[Box]] = {}
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            boxes = out.setdefault(row["image"], [])
            if row["cell_type"] == cell_type:
                boxes.append((int(row["xmin"]) - 1, int(row["ymin"]) - 1, int(row["xmax"]), int(row["ymax"])))
    return out


def evaluate_detection(images_dir: str | os.PathLike, boxes_csv: str | os.PathLike, *,
                       detector: Callable[[np.ndarray], Sequence[Box]] | None = None, min_iou: float = MIN_IOU,
                       limit: int | None = None) -> tuple[DetectionScore, dict[str, DetectionScore]]:
    """Score ``detector`` (default: the cell boxes of :func:`find_cells`) on every image of ``boxes_csv``.

    Returns the total and the per-image scores (to list the misses).
    """
    from ..images import load_image

    detector = detector or (lambda rgb: [r.bbox for r in find_cells(rgb)])
    truth = load_boxes(boxes_csv)
    names = sorted(truth)[:limit] if limit else sorted(truth)
    per_image = {}
    for name in names:
        rgb = load_image(Path(images_dir) / name)
        per_image[name] = match_boxes(list(detector(rgb)), truth[name], min_iou=min_iou)
    total = sum(per_image.values(), DetectionScore(0, 0, 0, 0, min_iou))
    return total, per_image
