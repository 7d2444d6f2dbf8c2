"""Whole-field white-cell detection scored against BCCD's WBC boxes (IoU >= 0.5).

    python -m bench.field_eval --bccd ../shared/data/bccd [--min-iou 0.5] [--limit N] [--list-misses]

Runs the station's field detector (:func:`hematovision.cells.detection.find_cells`, the
stain segmentation shared with the morphology module) on every field listed
in ``boxes.csv`` and prints recall, precision and the time per field. Target:
recall >= 95 % at precision >= 90 %. BCCD fields hold no tuning role here:
they come from another lab, microscope and stain than the PBC training images.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from hematovision.cells.detection import MIN_IOU


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.field_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(os.environ["HEMATOVISION_DATA"]) / "bccd" if os.environ.get("HEMATOVISION_DATA") else None
    p.add_argument("--bccd", type=Path, default=default, help="the BCCD folder (images/ and boxes.csv); default $HEMATOVISION_DATA/bccd")
    p.add_argument("--min-iou", type=float, default=MIN_IOU, help="(default: %(default)s)")
    p.add_argument("--limit", type=int, help="only the first N fields")
    p.add_argument("--list-misses", action="store_true", help="print the fields with a missed or a false detection")
    args = p.parse_args(argv)
    if args.bccd is None or not (args.bccd / "boxes.csv").is_file():
        p.error("pass --bccd DIR (the folder with images/ and boxes.csv) or set HEMATOVISION_DATA")

    from hematovision.cells.detection import evaluate_detection

    start = time.perf_counter()
    total, per_image = evaluate_detection(args.bccd / "images", args.bccd / "boxes.csv", min_iou=args.min_iou, limit=args.limit)
    elapsed = time.perf_counter() - start
    n_true = total.true_positives + total.false_negatives
    print(f"BCCD WBC detection, IoU >= {args.min_iou}: {total.images} fields, {n_true} WBC boxes")
    print(f"recall {total.recall:.1%} ({total.true_positives}/{n_true}), precision {total.precision:.1%} "
          f"({total.true_positives}/{total.true_positives + total.false_positives}); "
          f"{total.false_negatives} missed, {total.false_positives} false; "
          f"{1000 * elapsed / max(total.images, 1):.1f} ms per field (decode + detect)")
    if args.list_misses:
        for name, s in per_image.items():
            if s.false_negatives or s.false_positives:
                print(f"  {name}: missed {s.false_negatives}, false {s.false_positives}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
