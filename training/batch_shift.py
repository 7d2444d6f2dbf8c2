"""How often does the batch-level shift check fire, and how much confidently wrong does it catch?

    python -m training.batch_shift --model wbc --pbc ../shared/data/pbc \\
        --labelled ../shared/data/otherlabs/zheng1 ../shared/data/otherlabs/zheng2 --bccd ../shared/data/bccd \\
        --blasts ../shared/data/all --blasts-per-class 100 --sizes 5 10 20 50 --batches 2000 --sequential 100 \\
        --out reports/wbc_batch_shift.json

Every cell of each set is classified once through the public API. Then, for each batch size ``n``, ``--batches``
random batches of ``n`` cells (seeded, without replacement within a batch) are drawn from one set and judged by
:func:`hematovision.batch_shift.check_batch` exactly as the product judges them: the out-of-distribution count
and, where the model JSON has ``ood.atypical_threshold``, the atypical count. Reported per set and size
(``by_size``): the share of batches called shifted (on PBC test, the false-alarm rate), and the share of cells
that are confidently wrong (not flagged, wrong) without and with the batch check (a cell of a shifted batch counts
as flagged). ``by_size_flag_count_only`` is the same with the out-of-distribution count alone (the check before
the atypical count was added). BCCD crops have no subtype labels: only the alarm rate is reported for them.
``--blasts DIR`` adds B-lymphoblasts cut from the ALL set's malignant fields at PBC framing (as in
``training.crosslab``): cells of a type the model does not know, from a smear of a patient, not a new microscope;
the alarm rate is reported for them too (a smear full of blasts is also "unlike the training lab's cells").

``--sequential N`` also measures the station's running check, which looks again at a growing session: for
``--batches`` random orderings of N cells of a set, the session is judged after every cell (the worst case: the
station looks every ``--summary-every`` seconds), and reported (``sequential``) are the share of sessions where
the warning ever fires (on the training lab's own cells, the false-alarm rate of repeated looks) and, over the
sessions where it fires, the median and 90th percentile of the cell count at which it first does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hematovision.batch_shift import EXPECTED_ATYPICAL_RATE, EXPECTED_OOD_RATE, check_batch


def cells_of(clf, images, labels) -> dict:
    """Per-cell arrays: out of distribution, atypical (None without the threshold), flagged (uncertain or OOD),
    correct (None without labels)."""
    preds = [clf.predict(im, cam=False) for im in images]
    ood = np.array([bool(p.out_of_distribution) for p in preds])
    atypical = np.array([p.atypical for p in preds], dtype=object)
    flagged = np.array([p.uncertain or bool(p.out_of_distribution) for p in preds])
    correct = None if labels is None else np.array([p.label == lab for p, lab in zip(preds, labels)])
    return {"ood": ood, "atypical": atypical, "flagged": flagged, "correct": correct}


def simulate(cells: dict, size: int, batches: int, seed: int, *, use_atypical: bool = True) -> dict:
    """Random batches of ``size`` cells: the alarm rate and the confidently-wrong share without and with the check.

    ``use_atypical=False``: the out-of-distribution count alone."""
    n = len(cells["ood"])
    if size > n:
        return {"size": size, "skipped": f"only {n} cells"}
    rng = np.random.default_rng(seed)
    alarms, wrong_plain, wrong_checked = 0, 0, 0
    for _ in range(batches):
        idx = rng.choice(n, size, replace=False)
        shifted = check_batch(cells["ood"][idx], atypical=cells["atypical"][idx] if use_atypical else ()).shifted
        alarms += shifted
        if cells["correct"] is not None:
            confidently_wrong = int(np.sum(~cells["flagged"][idx] & ~cells["correct"][idx]))
            wrong_plain += confidently_wrong
            wrong_checked += 0 if shifted else confidently_wrong
    out = {"size": size, "batches": batches, "shifted_share": alarms / batches}
    if cells["correct"] is not None:
        out["confidently_wrong_without_check"] = wrong_plain / (batches * size)
        out["confidently_wrong_with_check"] = wrong_checked / (batches * size)
    return out


def sequential(cells: dict, length: int, runs: int, seed: int) -> dict:
    """Random orderings of ``length`` cells judged after every cell: how often and how soon the warning first fires."""
    n = len(cells["ood"])
    length = min(length, n)
    rng = np.random.default_rng(seed)
    first = []
    for _ in range(runs):
        order = rng.permutation(n)[:length]
        ood, atypical = list(cells["ood"][order]), list(cells["atypical"][order])
        first.append(next((k for k in range(1, length + 1) if check_batch(ood[:k], atypical=atypical[:k]).shifted), None))
    fired = [k for k in first if k is not None]
    return {"cells": length, "sessions": runs, "ever_shifted_share": len(fired) / runs,
            "first_warning_at_cells": {"median": float(np.median(fired)), "p90": float(np.percentile(fired, 90))} if fired else None}


def _sets(args) -> dict:
    """{name: (images, labels or None)} for every set asked for."""
    from hematovision.images import load_image

    from .crosslab import labelled_cells
    from .data import read_splits

    sets = {}
    if args.pbc:
        rows = [r for r in read_splits(args.pbc) if r["split"] == "test"]
        sets[f"{Path(args.pbc).name}_test"] = ([load_image(Path(args.pbc) / r["path"]) for r in rows], [r["label"] for r in rows])
    for folder in args.labelled:
        cells = labelled_cells(folder)
        sets[Path(folder).name] = ([load_image(p) for p, _ in cells], [lab for _, lab in cells])
    if args.blasts:
        from .crosslab import blast_crops

        sets["blasts_pbc_framing"] = (blast_crops(args.blasts, per_class=args.blasts_per_class), None)
    if args.bccd:
        from .robustness import bccd_crops

        sets["bccd_wbc_crops"] = ([im for _, im in bccd_crops(args.bccd)], None)
    return sets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.batch_shift", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model name or JSON path (it needs an OOD reference)")
    p.add_argument("--pbc", help="the model's own dataset folder, e.g. ../shared/data/pbc (its test split, reported as <folder>_test: the false-alarm rate)")
    p.add_argument("--labelled", nargs="*", default=[], help="other labs' labelled folders (DIR/<label>/<image>)")
    p.add_argument("--bccd", help="BCCD folder (boxes.csv + images/): unlabelled white-cell crops")
    p.add_argument("--blasts", help="ALL dataset folder: B-lymphoblasts cut out at PBC framing (unknown cell type)")
    p.add_argument("--blasts-per-class", type=int, help="at most N ALL images per malignant class")
    p.add_argument("--sizes", nargs="+", type=int, default=[5, 10, 20, 50], help="batch sizes (cells)")
    p.add_argument("--batches", type=int, default=2000, help="random batches per set and size")
    p.add_argument("--sequential", type=int, metavar="N",
                   help="also judge random N-cell sessions after every cell (the station's running check)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the report JSON here")
    args = p.parse_args(argv)
    if min(args.sizes) < 1 or args.batches < 1 or (args.sequential is not None and args.sequential < 1):
        p.error("--sizes, --batches and --sequential must be positive")

    import hematovision

    clf = hematovision.load_model(args.model)
    if clf.ood is None:
        p.error(f"{clf.name} has no out-of-distribution reference (python -m export.ood fits one)")
    report = {"model": clf.name, "sha256": clf.spec.sha256,
              "command": "python -m training.batch_shift " + " ".join(argv if argv is not None else sys.argv[1:]),
              "ood_threshold": clf.ood.threshold, "atypical_threshold": clf.spec.atypical_threshold,
              "expected_rates": {"out_of_distribution": EXPECTED_OOD_RATE, "atypical": EXPECTED_ATYPICAL_RATE},
              "sets": {}}
    for name, (images, labels) in _sets(args).items():
        cells = cells_of(clf, images, labels)
        known = [bool(a) for a in cells["atypical"] if a is not None]
        report["sets"][name] = {
            "cells": len(images), "ood_share": float(cells["ood"].mean()),
            "atypical_share": float(np.mean(known)) if known else None,
            "by_size": [simulate(cells, s, args.batches, args.seed) for s in args.sizes],
            "by_size_flag_count_only": [simulate(cells, s, args.batches, args.seed, use_atypical=False) for s in args.sizes]}
        if args.sequential:
            report["sets"][name]["sequential"] = sequential(cells, args.sequential, args.batches, args.seed)
        print(name, json.dumps(report["sets"][name]), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
