"""Cross-lab proxy evaluation of a shipped model, through the public API.

    python -m training.robustness --model models/wbc.json --data ../shared/data/pbc \
        --bccd ../shared/data/bccd --out reports/wbc_robustness.json

Reports on the PBC `test` split: clean accuracy; accuracy on the same images
upsampled to the 360x363 original size and to 1000x1000 (resolution
independence); accuracy under the six simulated-lab profiles
(training/simulated_lab.py) and how often they are flagged uncertain; the
share of real test cells flagged out-of-distribution. On BCCD (another lab,
no subtype labels): the share of WBC crops flagged uncertain / OOD and the
predicted differential. On the generated non-blood set: the rejection rate.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from hematovision.images import load_image
from training.data import read_splits
from training.reportio import write_report


def crop_box(image: np.ndarray, box: tuple[int, int, int, int], *, scale: float = 1.9) -> np.ndarray:
    """Square crop centred on a cell box, side = scale x the box's longer side (PBC-like framing), mirrored at borders."""
    x0, y0, x1, y1 = box
    side = int(round(scale * max(x1 - x0, y1 - y0)))
    pad = cv2.copyMakeBorder(image, side, side, side, side, cv2.BORDER_REFLECT_101)
    cx, cy = (x0 + x1) / 2 + side, (y0 + y1) / 2 + side
    top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
    return np.ascontiguousarray(pad[top:top + side, left:left + side])


def bccd_crops(bccd_dir: str | Path) -> list[tuple[str, np.ndarray]]:
    root = Path(bccd_dir)
    with open(root / "boxes.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["cell_type"] == "WBC"]
    cache: dict[str, np.ndarray] = {}
    out = []
    for r in rows:
        img = cache.setdefault(r["image"], load_image(root / "images" / r["image"]))
        out.append((r["image"], crop_box(img, tuple(int(float(r[k])) for k in ("xmin", "ymin", "xmax", "ymax")))))
    return out


def _score(clf, images, labels=None) -> dict:
    preds = [clf.predict(img, cam=False) for img in images]
    out = {
        "n": len(preds),
        "flagged_uncertain": float(np.mean([p.uncertain for p in preds])),
        "flagged_out_of_distribution": float(np.mean([bool(p.out_of_distribution) for p in preds])),
        "predicted_distribution": {k: v / len(preds) for k, v in sorted(Counter(p.label for p in preds).items())},
    }
    if labels is not None:
        correct = np.array([p.label == y for p, y in zip(preds, labels)])
        keep = ~np.array([p.uncertain for p in preds])
        out["accuracy"] = float(correct.mean())
        out["accuracy_when_confident"] = float(correct[keep].mean()) if keep.any() else None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.robustness", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="the model's dataset folder (its test split is used)")
    p.add_argument("--bccd", help="BCCD folder (boxes.csv + images/) for the unlabelled other-lab check")
    p.add_argument("--out", help="write the report JSON here")
    p.add_argument("--limit", type=int, help="only the first N test images (quick look)")
    args = p.parse_args(argv)

    import hematovision
    from training.nonblood import generate
    from training.simulated_lab import PROFILES, transform_all

    clf = hematovision.load_model(args.model)
    rows = [r for r in read_splits(args.data) if r["split"] == "test"][: args.limit]
    images = [load_image(Path(args.data) / r["path"]) for r in rows]
    labels = [r["label"] for r in rows]
    report: dict = {"model": clf.name, "sha256": clf.spec.sha256, "command": "python -m training.robustness " + " ".join(argv or sys.argv[1:])}
    report["clean"] = _score(clf, images, labels)
    for name, (h, w) in {"upsampled_360x363": (363, 360), "upsampled_1000": (1000, 1000)}.items():
        report[name] = _score(clf, [cv2.resize(im, (w, h), interpolation=cv2.INTER_CUBIC) for im in images], labels)
    lab = transform_all(images, seed=0)
    report["simulated_lab"] = _score(clf, [im for _, im in lab], labels)
    report["simulated_lab_per_profile"] = {
        prof: _score(clf, [im for (pp, im) in lab if pp == prof], [y for (pp, _), y in zip(lab, labels) if pp == prof])
        for prof in PROFILES
    }
    if args.bccd:
        report["bccd_wbc_crops"] = _score(clf, [im for _, im in bccd_crops(args.bccd)])
    nonblood = generate(60)
    nb = [clf.predict(img, cam=False) for _, img in nonblood]
    report["nonblood"] = {
        "n": len(nb),
        "rejected_out_of_distribution": float(np.mean([bool(q.out_of_distribution) for q in nb])),
        "flagged_uncertain": float(np.mean([q.uncertain for q in nb])),
        "per_category_uncertain": {c: float(np.mean([q.uncertain for (cc, _), q in zip(nonblood, nb) if cc == c])) for c in sorted({c for c, _ in nonblood})},
    }
    print(write_report(report, args.out))
    return 0


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
