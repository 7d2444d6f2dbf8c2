"""How much of a model's CAM falls on the white cell: the localisation figure of the model card.

    python -m training.cam_localisation --model wbc --data ../shared/data/pbc --out reports/wbc_cam_localisation.json

For every image of the test split: the shipped model's CAM of its top class
(``Prediction.cam``, upsampled to the image, the same map the app draws) and
the core's segmentation of the central white cell (``morphology.segment``).
Localisation = sum(CAM inside the cell mask) / sum(CAM). A uniform map scores
the cell's share of the frame, reported beside it as the chance level; the
ceiling is what the cell mask itself scores once pooled to the model's feature
grid and upsampled (``best_map_share``): a 4x4 map cannot point finer than that. Images
the segmentation cannot read (no nucleated cell found) are counted and skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from hematovision.images import load_image

from .reportio import write_report


def mass_inside(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's mass inside ``mask`` (nan for an all-zero map)."""
    total = float(cam.sum())
    return float(cam[mask].sum()) / total if total > 0 else float("nan")


def best_map_share(mask: np.ndarray, grid: tuple[int, int]) -> float:
    """The ceiling a feature map of ``grid`` cells can reach: the cell mask itself pooled to the grid
    (cells more than half covered = 1, else 0), upsampled like a CAM, scored like a CAM."""
    from hematovision.cam import upsample

    pooled = cv2.resize(mask.astype(np.float32), (grid[1], grid[0]), interpolation=cv2.INTER_AREA)
    ideal = (pooled > 0.5).astype(np.float32) if (pooled > 0.5).any() else pooled / max(float(pooled.max()), 1e-12)
    return mass_inside(upsample(ideal, *mask.shape), mask)


def central_cell_mask(rgb: np.ndarray) -> np.ndarray | None:
    """The core's segmentation of the central nucleated cell (bool mask), or None where there is none to score."""
    from hematovision.cells.morphology import segment
    from hematovision.errors import SegmentationError

    try:
        seg = segment(rgb)
    except SegmentationError:
        return None
    return seg.cell_mask if seg.nucleated and seg.cell_mask.any() else None


def localisation(clf, paths, *, limit: int | None = None) -> dict:
    shares, chance, ceiling, skipped = [], [], [], 0
    grid = tuple(clf.spec.raw["outputs"]["features"]["shape"][1:3])
    for path in list(paths)[:limit]:
        rgb = load_image(path)
        mask = central_cell_mask(rgb)
        if mask is None:
            skipped += 1
            continue
        pred = clf.predict(rgb, cam=True)
        shares.append(mass_inside(pred.cam, mask))
        chance.append(float(mask.mean()))
        ceiling.append(best_map_share(mask, grid))
    s = np.array([v for v in shares if np.isfinite(v)])
    # An all-zero map (every class-weighted feature negative before the ReLU) has no mass to place: counted apart.
    return {"n": int(len(s)), "skipped_no_cell": skipped, "all_zero_maps": int(len(shares) - len(s)),
            "mean_cam_mass_inside_cell": float(s.mean()) if len(s) else None,
            "median": float(np.median(s)) if len(s) else None,
            "share_of_images_above_0.5": float(np.mean(s > 0.5)) if len(s) else None,
            "uniform_map_chance": float(np.mean(chance)) if chance else None,
            "feature_grid": list(grid),
            "best_possible_at_this_grid": float(np.nanmean(ceiling)) if ceiling else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.cam_localisation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="dataset folder with splits.csv")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int)
    p.add_argument("--out")
    a = p.parse_args(argv)
    import hematovision

    from .data import read_splits

    clf = hematovision.load_model(a.model)
    paths = [Path(a.data) / r["path"] for r in read_splits(a.data) if r["split"] == a.split]
    report = {"model": clf.name, "sha256": clf.spec.sha256, "split": a.split,
              "command": "python -m training.cam_localisation " + " ".join(argv if argv is not None else sys.argv[1:]),
              **localisation(clf, paths, limit=a.limit)}
    print(write_report(report, a.out))
    return 0


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
