"""How well an image's own red cells measure its scale (:mod:`hematovision.cells.red_cells`).

    python -m bench.red_cell_scale --bccd ../shared/data/bccd --pbc ../shared/data/pbc [--out bench/results/red_cell_scale.json]

Truth per image:
* BCCD fields (640x480, another lab): the median of the annotated red-cell boxes' mean side, boxes more
  than 2 px from the edge, fields with at least 3 such boxes;
* PBC images (160 px): PBC's framing as the model JSON states it, a red cell = 0.2 x sqrt(H x W)
  (``morphology.red_cell_fraction``, a nominal value, so this part checks agreement with it).

The method's settings were chosen on the first 60 BCCD fields (sorted by name) and every 100th PBC image
(sorted, first 60): ``tuning``. Everything else listed is ``check``, reported separately. Per image: the
median relative error, the median absolute relative error and the share within 15 %; per camera (BCCD
is one lab): the error of the median over the check fields, what ``hematovision calibrate`` would give.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

TUNING_BCCD = 60
TUNING_PBC_STEP, TUNING_PBC = 100, 60
PBC_FRACTION = 0.2


def bccd_truth(folder: Path) -> dict[str, float]:
    boxes = defaultdict(list)
    with open(folder / "boxes.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["cell_type"] != "RBC":
                continue
            x0, y0, x1, y1 = (int(r[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            if x0 > 2 and y0 > 2 and x1 < 637 and y1 < 477:
                boxes[r["image"]].append((x1 - x0 + y1 - y0) / 2)
    return {name: float(np.median(d)) for name, d in sorted(boxes.items()) if len(d) >= 3}


def summary(ratios: list[float], missing: int) -> dict:
    """Per-image figures from the measured / true diameter ratios (relative error = ratio - 1)."""
    e = np.array(ratios) - 1
    return {"images": len(e) + missing, "not_measured": missing,
            "median_relative_error": round(float(np.median(e)), 4) if len(e) else None,
            "median_absolute_relative_error": round(float(np.median(np.abs(e))), 4) if len(e) else None,
            "within_15_percent": round(float(np.mean(np.abs(e) < 0.15)), 4) if len(e) else None}


def score(paths: list[Path], truth) -> tuple[dict, list[float]]:
    """Measure each image once; ``truth(path, rgb)`` is its true red-cell diameter. Returns the summary and the ratios."""
    from hematovision.cells.red_cells import measure_red_cell_px
    from hematovision.images import load_image

    ratios, missing = [], 0
    for path in paths:
        rgb = load_image(path)
        found = measure_red_cell_px(rgb)
        if found is None:
            missing += 1
            continue
        ratios.append(found.diameter_px / truth(path, rgb))
    return summary(ratios, missing), ratios


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.red_cell_scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    data = Path(os.environ["HEMATOVISION_DATA"]) if os.environ.get("HEMATOVISION_DATA") else None
    p.add_argument("--bccd", type=Path, default=data / "bccd" if data else None)
    p.add_argument("--pbc", type=Path, default=data / "pbc" if data else None)
    p.add_argument("--pbc-check-step", type=int, default=20, help="every Nth PBC test image is checked (default: %(default)s)")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = p.parse_args(argv)
    if args.bccd is None or not (args.bccd / "boxes.csv").is_file() or args.pbc is None or not (args.pbc / "splits.csv").is_file():
        p.error("pass --bccd DIR (images/, boxes.csv) and --pbc DIR (images/, splits.csv), or set HEMATOVISION_DATA")

    truth = bccd_truth(args.bccd)
    names = list(truth)
    bccd = {"tuning": names[:TUNING_BCCD], "check": names[TUNING_BCCD:]}
    every = sorted((args.pbc / "images").glob("*/*.jpg"))
    tuning_pbc = every[::TUNING_PBC_STEP][:TUNING_PBC]
    with open(args.pbc / "splits.csv", newline="") as f:
        test = sorted(args.pbc / r["path"] for r in csv.DictReader(f) if r["split"] == "test")
    tuned = set(tuning_pbc)
    pbc = {"tuning": tuning_pbc, "check": [q for q in test[::args.pbc_check_step] if q not in tuned]}

    def bccd_box(path, rgb):
        return truth[path.name]

    def pbc_framing(path, rgb):
        return PBC_FRACTION * float(np.sqrt(rgb.shape[0] * rgb.shape[1]))

    out = {"command": "python -m bench.red_cell_scale " + " ".join(argv if argv is not None else sys.argv[1:]),
           "method": "hematovision.cells.red_cells.measure_red_cell_px"}
    for part in ("tuning", "check"):
        out[f"bccd_{part}"], ratios = score([args.bccd / "images" / n for n in bccd[part]], bccd_box)
        if part == "check" and ratios:
            out["bccd_check"]["camera_median_error"] = round(float(np.median(ratios)) - 1, 4)
        out[f"pbc_{part}"], _ = score(pbc[part], pbc_framing)
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
