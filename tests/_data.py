"""Test helpers of the morphology and mesh tests: the shared data folder and synthetic smears.

The data folder is ``$HEMATOVISION_DATA``, else ``shared/data`` beside the
checkout; tests that need it skip with the reason when it is absent.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

# Colours (RGB) sampled from PBC images: peach glass, pink red cell, pale
# lilac-blue cytoplasm, purple chromatin.
BACKGROUND = (250, 228, 205)
RED_CELL = (212, 160, 168)
CYTOPLASM = (205, 190, 222)
NUCLEUS = (88, 48, 138)
PLATELET = (150, 110, 175)


def data_dir() -> Path:
    return Path(os.environ.get("HEMATOVISION_DATA", ROOT.parent / "shared" / "data"))


def require_data(*parts: str) -> Path:
    path = data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: this test needs the shared datasets (set HEMATOVISION_DATA)")
    return path


def split_images(dataset: str, split: str, label: str, n: int) -> list[Path]:
    """The first ``n`` images of ``label`` in ``split`` (splits.csv order: deterministic)."""
    root = require_data(dataset)
    with open(root / "splits.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split and r["label"] == label]
    return [root / r["path"] for r in rows[:n]]


def nucleus_mask(shape: tuple[int, int], centre: tuple[int, int], kind: str, radius: int) -> np.ndarray:
    """A synthetic nucleus: ``round``, ``bilobed`` or ``trilobed`` (lobes joined by 1-px filaments)."""
    mask = np.zeros(shape, np.uint8)
    cx, cy = centre
    if kind == "round":
        cv2.circle(mask, (cx, cy), radius, 1, -1)
        return mask.astype(bool)
    n = {"bilobed": 2, "trilobed": 3}[kind]
    r_lobe = max(3, int(radius * 0.5))
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + np.pi / 2
    centres = [(int(cx + radius * 0.65 * np.cos(a)), int(cy + radius * 0.65 * np.sin(a))) for a in angles]
    for c in centres:
        cv2.circle(mask, c, r_lobe, 1, -1)
    for a, b in zip(centres, centres[1:]):
        cv2.line(mask, a, b, 1, 1)
    return mask.astype(bool)


def synthetic_cell(size: int = 160, *, kind: str = "round", cell_radius: int = 28, nucleus_radius: int = 18,
                   centre: tuple[int, int] | None = None, red_cells: bool = True, seed: int = 0):
    """A PBC-like crop: red cells around one white cell. Returns (rgb, cell_mask, nucleus_mask)."""
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.float32)
    img[:] = BACKGROUND
    cx, cy = centre or (size // 2, size // 2)
    if red_cells:
        s = size / 5  # a red cell is a fifth of the frame
        for gx in np.arange(s / 2, size, s * 1.15):
            for gy in np.arange(s / 2, size, s * 1.15):
                if np.hypot(gx - cx, gy - cy) > cell_radius + s / 2 + 4:
                    cv2.circle(img, (int(gx), int(gy)), int(s / 2 - 2), RED_CELL, -1)
    cell = np.zeros((size, size), np.uint8)
    cv2.circle(cell, (cx, cy), cell_radius, 1, -1)
    img[cell > 0] = CYTOPLASM
    nuc = nucleus_mask((size, size), (cx, cy), kind, nucleus_radius)
    img[nuc] = NUCLEUS
    img = cv2.GaussianBlur(img, (0, 0), 0.7) + rng.normal(0, 2.0, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), cell.astype(bool), nuc


def synthetic_field(width: int = 640, height: int = 480, seed: int = 0):
    """A BCCD-like field: red cells, two white cells (one bilobed), two platelets.

    Returns (rgb, [bbox of each white cell]) with bboxes (x0, y0, x1, y1), x1/y1 exclusive.
    """
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.float32)
    img[:] = BACKGROUND
    s = np.sqrt(width * height) / 5
    wbcs = [((170, 200), 80, "round"), ((460, 280), 85, "bilobed")]
    for gx in np.arange(s / 2, width, s * 1.1):
        for gy in np.arange(s / 2, height, s * 1.1):
            if all(np.hypot(gx - c[0], gy - c[1]) > r + s / 2 + 6 for c, r, _ in wbcs):
                cv2.circle(img, (int(gx), int(gy)), int(s / 2 - 4), RED_CELL, -1)
    boxes = []
    for (cx, cy), r, kind in wbcs:
        cv2.circle(img, (cx, cy), r, CYTOPLASM, -1)
        img[nucleus_mask((height, width), (cx, cy), kind, int(r * 0.65))] = NUCLEUS
        boxes.append((cx - r, cy - r, cx + r + 1, cy + r + 1))
    for p in ((330, 60), (600, 440)):  # platelets: small purple dots in the gaps
        cv2.circle(img, p, 9, PLATELET, -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.0) + rng.normal(0, 2.0, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), boxes


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
