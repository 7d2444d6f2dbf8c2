"""What a stricter out-of-distribution threshold buys on other labs, and what it costs on PBC.

    python -m training.flag_tradeoff --model wbc --pbc ../shared/data/pbc \
        --labelled ../shared/data/otherlabs/zheng1 ../shared/data/otherlabs/zheng2 \
        --percentiles 99.9 99 97.5 95 --out reports/wbc_flag_tradeoff.json

A cell is flagged when its calibrated confidence is below the model's uncertain
threshold or its OOD score (hematovision/ood.py) is above the OOD threshold.
The shipped OOD threshold is a high percentile of PBC ``val`` scores (the model
JSON's ``ood.threshold_rule``). Here the OOD threshold is re-set at each of
``--percentiles`` of the same ``val`` scores (nothing else changes) and, for PBC
``test`` and each labelled other-lab folder, reported: share flagged, accuracy of
the cells not flagged and share confidently wrong (not flagged and wrong), with
Wilson 95 % intervals. One pass of ``predict`` per image; the thresholds are
applied to its stored confidence and OOD score. This is the selective
classification trade-off (coverage against risk) behind "confidently wrong".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from hematovision import load_model
from hematovision.images import load_image

from .crosslab import _interval, labelled_cells
from .data import read_splits
from .reportio import write_report


def scored(clf, images) -> dict:
    """Confidence, OOD score and label of each image, from one ``predict`` each."""
    preds = [clf.predict(im, cam=False) for im in images]
    return {"confidence": np.array([p.confidence for p in preds]), "ood": np.array([p.ood_score for p in preds], float),
            "predicted": np.array([p.label for p in preds])}


def at_threshold(s: dict, truth: np.ndarray, uncertain: float, ood_threshold: float) -> dict:
    flagged = (s["confidence"] < uncertain) | (s["ood"] > ood_threshold)
    correct, keep = s["predicted"] == truth, ~flagged
    n = len(truth)
    return {"flagged": _interval(int(flagged.sum()), n), "accuracy_not_flagged": _interval(int(correct[keep].sum()), int(keep.sum())),
            "confidently_wrong": _interval(int((keep & ~correct).sum()), n)}


def tradeoff(clf, pbc: Path, labelled: list[Path], percentiles: list[float]) -> dict:
    if clf.ood is None:
        raise ValueError(f"{clf.name} has no OOD reference (ood.file in its JSON); export one with `python -m export.ood`.")
    rows = read_splits(pbc)
    sets = {}
    for split in ("val", "test"):
        chosen = [r for r in rows if r["split"] == split]
        sets[f"pbc_{split}"] = (scored(clf, [pbc / r["path"] for r in chosen]), np.array([r["label"] for r in chosen]))
        print(f"pbc {split}: {len(chosen)} cells", file=sys.stderr)
    for folder in labelled:
        cells = labelled_cells(folder)
        sets[folder.name] = (scored(clf, [load_image(p) for p, _ in cells]), np.array([lab for _, lab in cells]))
        print(f"{folder.name}: {len(cells)} cells", file=sys.stderr)
    thresholds = {"shipped": clf.ood.threshold}
    thresholds.update({f"p{p:g}": float(np.percentile(sets["pbc_val"][0]["ood"], p)) for p in percentiles})
    results = {name: {"ood_threshold": t, **{key: at_threshold(s, y, clf.spec.uncertain_threshold, t)
                                            for key, (s, y) in sets.items()}} for name, t in thresholds.items()}
    return {"model": clf.name, "sha256": clf.spec.sha256, "shipped_rule": clf.spec.raw.get("ood", {}).get("threshold_rule"),
            "uncertain_threshold": clf.spec.uncertain_threshold, "counts": {k: len(y) for k, (_, y) in sets.items()},
            "thresholds": results}


def table(report: dict) -> str:
    sets = [k for k in report["counts"] if k != "pbc_val"]
    head = "| OOD threshold | " + " | ".join(f"{s}: flagged / acc. not flagged / conf. wrong" for s in sets) + " |"
    lines = [head, "|" + "---|" * (len(sets) + 1)]
    for name, r in report["thresholds"].items():
        cells = [f"{100 * r[s]['flagged']['value']:.1f} % / "
                 + ("-" if r[s]["accuracy_not_flagged"]["value"] is None else f"{100 * r[s]['accuracy_not_flagged']['value']:.1f} %")
                 + f" / {100 * r[s]['confidently_wrong']['value']:.1f} %" for s in sets]
        lines.append(f"| {name} ({r['ood_threshold']:.4f}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.flag_tradeoff", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="wbc")
    ap.add_argument("--pbc", type=Path, required=True, help="the training dataset folder (splits.csv): val sets the thresholds")
    ap.add_argument("--labelled", type=Path, nargs="*", default=[], help="other-lab folders, DIR/<label>/<image> or DIR/images/...")
    ap.add_argument("--percentiles", type=float, nargs="+", default=[99.9, 99.0, 97.5, 95.0])
    ap.add_argument("--out", help="JSON report path (default: print it)")
    args = ap.parse_args(argv)
    if any(not 0 < p <= 100 for p in args.percentiles):
        ap.error("--percentiles must lie in (0, 100]")
    report = tradeoff(load_model(args.model), args.pbc, args.labelled, args.percentiles)
    report["command"] = "python -m training.flag_tradeoff " + " ".join(sys.argv[1:] if argv is None else argv)
    print(write_report(report, args.out))
    print(table(report), file=sys.stderr)
    return 0


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
