"""Audit a labelled cell set the way ``adapt`` checks a lab's labels, with a contact sheet of the cells to look at.

    python -m training.label_audit --model wbc --cells ../shared/data/otherlabs/zheng1 ../shared/data/otherlabs/zheng2 \
        --out 'reports/label_check_{name}.json'

All of a folder's cells go through ``adapt``'s own fit (hematovision/adapt.py:
head refitted on every labelled cell, l2 chosen by the stratified cross-validation),
and the out-of-fold predictions are compared with the labels
(hematovision/label_check.py). Two things come out per folder:

* the out-of-fold accuracy with every other cell of the lab labelled: the most a
  head on these frozen features reaches on this lab with this many labels (the
  few-shot protocol, ``training.fewshot``, uses 5-20 per class);
* the cells whose out-of-fold prediction names another class, as JSON and as a
  JPEG contact sheet beside it (``label > predicted`` on each tile), for a
  specialist to say which are mislabelled and which the model gets wrong.

Classes with fewer than 2 cells are left out (recorded). ``--cells`` may be an
otherlabs folder (DIR/images/<label>/<file>) or DIR/<label>/<file>.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from hematovision import load_model
from hematovision.adapt import MIN_CELLS_PER_CLASS, extract, fit_lab_head, scan_cells, source_theta
from hematovision.images import load_image
from hematovision.lab_calibration import refit_calibration
from hematovision.label_check import RULE, label_disagreements
from training.crosslab import cells_root
from training.fewshot import report_paths
from training.metrics import wilson

TILE = 160


def contact_sheet(root: Path, rows, path: Path, *, columns: int = 6) -> None:
    """JPEG of the listed cells, each captioned 'label > predicted'."""
    tiles = []
    for r in rows:
        tile = cv2.resize(load_image(root / r.file), (TILE, TILE), interpolation=cv2.INTER_AREA)
        cv2.rectangle(tile, (0, 0), (TILE, 14), (255, 255, 255), -1)
        cv2.putText(tile, f"{r.label[:6]} > {r.predicted[:6]}", (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1)
        tiles.append(tile)
    tiles += [np.full((TILE, TILE, 3), 255, np.uint8)] * (-len(tiles) % columns)
    sheet = np.vstack([np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)])
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])


def audit(clf, cells_dir: Path, sheet: Path | None) -> dict:
    root = cells_root(cells_dir)
    groups = scan_cells(root, clf.labels)
    left_out = {lb: len(v) for lb, v in groups.items() if len(v) < MIN_CELLS_PER_CLASS}
    groups = {lb: v for lb, v in groups.items() if lb not in left_out}
    files = [p for v in groups.values() for p in v]
    y = np.array([clf.labels.index(lb) for lb, v in groups.items() for _ in v])
    print(f"{root}: {len(files)} cells; extracting features...", file=sys.stderr)
    feats, _ = extract(clf, [load_image(p) for p in files])
    theta0 = source_theta(clf)
    fit = fit_lab_head(feats, y, theta0, clf.spec.tta)
    temperature, _ = refit_calibration(fit.oof, y)
    rows = label_disagreements(fit.oof, y, [f"{p.parent.name}/{p.name}" for p in files], clf.labels, temperature=temperature)
    if sheet is not None and rows:
        contact_sheet(root, rows, sheet)
    correct = int((fit.oof.argmax(axis=1) == y).sum())
    return {"model": clf.name, "model_sha256": clf.spec.sha256, "cells": str(root),
            "count_per_class": {lb: len(v) for lb, v in groups.items()}, "classes_left_out": left_out,
            "l2": fit.l2, "folds": fit.folds, "temperature": temperature,
            "out_of_fold_accuracy": {"value": correct / len(y), "ci95": list(wilson(correct, len(y))), "n": len(y)},
            "label_check": {"rule": RULE, "n": len(rows), "cells": [r.to_json() for r in rows]},
            "contact_sheet": None if sheet is None or not rows else str(sheet)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.label_audit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="wbc")
    ap.add_argument("--cells", type=Path, nargs="+", required=True, help="one or more labelled folders (one report each)")
    ap.add_argument("--out", required=True, help="report path; with several --cells, a path with {name} (the folder's name)")
    ap.add_argument("--no-sheet", action="store_true", help="skip the JPEG contact sheet (written beside the JSON)")
    args = ap.parse_args(argv)
    outs = report_paths(ap, args.cells, args.out)
    clf = load_model(args.model)
    command = "python -m training.label_audit " + " ".join(sys.argv[1:] if argv is None else argv)
    for cells_dir, out in zip(args.cells, outs):
        out.parent.mkdir(parents=True, exist_ok=True)
        report = audit(clf, cells_dir, None if args.no_sheet else out.with_suffix(".jpg"))
        out.write_text(json.dumps({**report, "command": command}, indent=2) + "\n", encoding="utf-8")
        acc = report["out_of_fold_accuracy"]
        print(f"{out}: out-of-fold accuracy {acc['value']:.3f} {acc['ci95']}, {report['label_check']['n']} cells to check",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
