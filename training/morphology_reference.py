"""Normal morphology reference per class, and the segmentation check, on the PBC dataset.

    python -m training.morphology_reference --data DIR [--out models/wbc.morphology.json]
    python -m training.morphology_reference --data DIR --check [--split test]

``DIR`` holds ``splits.csv`` (path,label,split) and ``images/<label>/``. The
first form segments and measures every image of the ``train`` split and
writes per-class feature distributions (median, 5-95 % range, MAD, quantiles)
for :func:`hematovision.cells.morphology.compare`, recording command, data and date.
The second form (``--check``) reports the segmentation success rate and the
per-class medians on a split (default ``test``) and exits 1 when the success
rate over white cells is below ``--min-success`` (default 0.98).

What counts as success: for a nucleated class (all but ``platelet``) one
nucleus (lobes merged) of plausible area, 0.25-5 red-cell diameters squared,
within 30 % of the frame side of the centre; for ``platelet`` an anucleate
object. Uses only the core (numpy, OpenCV): no TensorFlow.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from hematovision.cells import segmentation, stain
from hematovision.errors import HematoVisionError
from hematovision.images import load_image
from hematovision.cells.morphology import (
    COMPARED_FEATURES,
    REFERENCE_FORMAT,
    REFERENCE_LABEL_MAP,
    CellFeatures,
    measure,
    segment,
    summarize,
)

ANUCLEATE_CLASSES = ("platelet",)
QUANTILE_LEVELS = tuple(float(p) for p in range(0, 101, 5))
#: Scalar features stored in the reference (compare uses COMPARED_FEATURES of them).
STORED_FEATURES = COMPARED_FEATURES + ("cell_area_px", "nucleus_area_px", "nucleus_eccentricity")
MAX_CENTRE_OFFSET = 0.30


def read_split(data: Path, split: str) -> list[tuple[Path, str]]:
    with open(data / "splits.csv", newline="", encoding="utf-8") as fh:
        return [(data / row["path"], row["label"]) for row in csv.DictReader(fh) if row["split"] == split]


def succeeded(label: str, features: CellFeatures, seg, shape: tuple[int, int]) -> bool:
    """The success rule of the module docstring."""
    if label in ANUCLEATE_CLASSES:
        return not seg.nucleated
    if not seg.nucleated:
        return False
    s2 = seg.red_cell_px ** 2
    area_ok = segmentation.MIN_NUCLEUS_AREA_S2 * s2 <= features.nucleus_area_px <= segmentation.MAX_NUCLEUS_AREA_S2 * s2
    ys, xs = np.nonzero(seg.nucleus_mask)
    h, w = shape
    offset = math.hypot(ys.mean() - (h - 1) / 2, xs.mean() - (w - 1) / 2) / min(h, w)
    return area_ok and offset <= MAX_CENTRE_OFFSET


def measure_split(data: Path, split: str, limit: int | None, progress: bool = True):
    """Per label: list of (path, features or None, success)."""
    items = read_split(data, split)
    if limit:
        per = defaultdict(list)
        for path, label in items:
            if len(per[label]) < limit:
                per[label].append((path, label))
        items = [x for v in per.values() for x in v]
    results: dict[str, list] = defaultdict(list)
    t0 = time.perf_counter()
    for i, (path, label) in enumerate(items):
        try:
            rgb = load_image(path)
            seg = segment(rgb)
            feats = measure(rgb, segmentation=seg)
            ok = succeeded(label, feats, seg, rgb.shape[:2])
        except HematoVisionError as exc:  # SegmentationError, unreadable image
            feats, ok = None, False
            print(f"  {path}: {exc}", file=sys.stderr)
        results[label].append((path, feats, ok))
        if progress and (i + 1) % 500 == 0:
            print(f"  {i + 1}/{len(items)} images, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return results, time.perf_counter() - t0, len(items)


def build_reference(results: dict, *, data: Path, split: str, argv: list[str], shape: tuple[int, int]) -> dict:
    classes = {}
    for label in sorted(results):
        rows = results[label]
        used = [f for _, f, ok in rows if ok and f is not None]
        classes[label] = {
            "n_images": len(rows),
            "n_used": len(used),
            "features": {name: summarize([getattr(f, name) for f in used], QUANTILE_LEVELS)
                         for name in STORED_FEATURES} if used else {},
        }
    return {
        "format": REFERENCE_FORMAT,
        "description": "Normal per-class morphology of PBC (CellaVision DM96, Hospital Clinic Barcelona) cells, "
                       "for hematovision.cells.morphology.compare. Research use only.",
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m training.morphology_reference " + " ".join(argv),
        "data": {"dir": str(data), "split": split, "dataset": "PBC (Acevedo et al. 2020, CC BY 4.0)"},
        "image_size": list(shape),
        "red_cell_px": stain.default_red_cell_px(shape),
        "um_per_px": None,
        "success_rule": "nucleated classes: one nucleus of 0.25-5 red-cell diameters^2 near the centre; "
                        "platelet: anucleate. Only successful segmentations enter the statistics.",
        "quantile_levels": list(QUANTILE_LEVELS),
        "compared_features": list(COMPARED_FEATURES),
        "label_map": dict(REFERENCE_LABEL_MAP),
        "classes": classes,
    }


def report(results: dict) -> tuple[float, str]:
    """(success rate over nucleated classes, text table of success and medians)."""
    lines = [f"{'class':13s} {'n':>5s} {'success':>8s} " + " ".join(f"{n[:12]:>12s}" for n in COMPARED_FEATURES)]
    ok_white = n_white = 0
    for label in sorted(results):
        rows = results[label]
        ok = sum(r[2] for r in rows)
        if label not in ANUCLEATE_CLASSES:
            ok_white += ok
            n_white += len(rows)
        feats = [f for _, f, good in rows if good and f is not None]
        medians = [float(np.median([getattr(f, n) for f in feats])) if feats else float("nan") for n in COMPARED_FEATURES]
        lines.append(f"{label:13s} {len(rows):5d} {ok / len(rows):8.1%} " + " ".join(f"{m:12.3f}" for m in medians))
    rate = ok_white / n_white if n_white else 0.0
    lines.append(f"white/nucleated cells (all classes but {', '.join(ANUCLEATE_CLASSES)}): "
                 f"{ok_white}/{n_white} = {rate:.2%} segmented")
    return rate, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m training.morphology_reference", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="PBC folder with splits.csv and images/")
    p.add_argument("--out", type=Path, default=Path("models/wbc.morphology.json"), help="reference JSON to write")
    p.add_argument("--split", default=None, help="split to use (default: train; test with --check)")
    p.add_argument("--limit-per-class", type=int, default=None, help="at most N images per class (quick runs)")
    p.add_argument("--check", action="store_true", help="report segmentation success and medians; write nothing")
    p.add_argument("--min-success", type=float, default=0.98, help="--check fails below this rate (default 0.98)")
    args = p.parse_args(argv)
    if not (args.data / "splits.csv").is_file():
        p.error(f"{args.data}/splits.csv not found; pass the PBC folder (…/data/pbc)")
    split = args.split or ("test" if args.check else "train")
    results, seconds, n = measure_split(args.data, split, args.limit_per_class)
    if not n:
        p.error(f"no images in split {split!r}")
    rate, table = report(results)
    print(f"{split}: {n} images in {seconds:.0f} s ({1000 * seconds / n:.1f} ms/image)")
    print(table)
    if args.check:
        return 0 if rate >= args.min_success else 1
    shape = load_image(next(iter(results.values()))[0][0]).shape[:2]
    doc = build_reference(results, data=args.data, split=split, argv=argv, shape=shape)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
