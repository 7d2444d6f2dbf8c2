"""How many labelled cells does a lab need? Few-shot head adaptation, measured.

    python -m training.fewshot --model wbc --cells ../shared/data/otherlabs/zheng1 ../shared/data/otherlabs/zheng2 \
        --k 5 10 20 --draws 20 --out 'reports/fewshot_{name}.json'    # one report per lab

For each k and each of ``--draws`` random draws: k cells per class are drawn as
the lab's labelled cells, the head is refitted exactly as
``python -m hematovision adapt`` does (hematovision/adapt.py; l2 chosen by the
draw's own cross-validation), and the adapted and source models are scored on
all remaining cells. Classes with fewer than
k + 1 cells are left out for that k (recorded). Reported: mean and std of the
accuracy over draws, and a Wilson 95 % interval on the accuracy pooled over
all draws' test predictions (draws share cells, so that interval is narrower
than an independent-sample one would be; the std over draws is the honest spread).
The adapted model's own flags are measured too, built per draw exactly as
``adapt`` writes them: temperature and uncertain threshold refitted on the
draw's out-of-fold logits (source values below 30 cells), the OOD reference
extended with the draw's cells. A test cell is flagged when its calibrated
confidence is below the threshold or it is out of distribution; reported:
share flagged, accuracy of the cells not flagged, and the share confidently
wrong (not flagged and wrong) - pooled over draws, with Wilson intervals.
A model with a differential scope (``python -m hematovision scope``) is scored
as it answers: the best class in scope, and a cell whose first choice lies
outside the scope flagged (hematovision/scope.py).
``--cells`` may be an otherlabs folder (DIR/images/<label>/<file> + labels.csv) or DIR/<label>/<file>.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hematovision import load_model
from hematovision.adapt import (DEFAULT_L2, L2_GRID, MIN_CELLS_FOR_CALIBRATION, deploy_features, extract, fit_lab_head, scan_cells,
                                source_theta)
from hematovision.lab_head import fit_head, view_samples
from hematovision.commands import bounded_int, finite_float, positive_int
from hematovision.lab_calibration import extend_ood, refit_calibration, softmax
from hematovision.images import load_image
from training.crosslab import cells_root
from training.fewshot_jitter import jitter_features
from training.metrics import wilson


def adapted_calibration(feats, y, train, fit, clf) -> tuple:
    """(temperature, uncertain threshold, OOD reference or None) as ``adapt`` calibrates them from the ``train`` cells."""
    if train.sum() >= MIN_CELLS_FOR_CALIBRATION:
        scope = clf.spec.scope  # the out-of-fold logits of the chosen l2, as adapt uses them (with its scope)
        t, thr = refit_calibration(fit.oof, y[train], counted=None if scope is None else scope.inside(clf.labels))
    else:
        t, thr = clf.spec.temperature, clf.spec.uncertain_threshold
    return t, thr, (extend_ood(clf.ood, feats[train])[0] if clf.ood is not None else None)


def flags_of(theta, xd, clf, calibration) -> np.ndarray:
    """The 'uncertain' flag of head ``theta`` on deployed features ``xd``, with ``adapted_calibration``'s values."""
    t, thr, ood = calibration
    p = softmax((xd @ theta) / t)
    label, outside = predicted(p, clf)
    flagged = (p[np.arange(len(p)), label] < thr) | outside
    if ood is not None:
        flagged |= ood.score(xd[:, :-1].astype(np.float32)) > ood.threshold
    return flagged


def pseudo_labelled_head(feats, y, train, pool, fit, theta0, clf, calibration) -> tuple[np.ndarray, np.ndarray]:
    """One round of transductive pseudo-labels (a measurement, reports/fewshot-pseudo_rule.txt): the cells of
    ``pool`` that the adapted head does not flag take its label, and the head is refitted once on labelled +
    pseudo-labelled cells (class-balanced over both, ``fit``'s l2, from the source head). Returns the new head and
    the pseudo-labelled mask."""
    xd = deploy_features(feats, clf.spec.tta)
    chosen = pool & ~flags_of(fit.theta, xd, clf, calibration)
    mixed = np.where(train, y, predicted(xd @ fit.theta, clf)[0])
    use = train | chosen
    return fit_head(*view_samples(feats[use], mixed[use]), theta0, fit.l2), chosen


def predicted(scores: np.ndarray, clf) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's label index and whether its first choice lies outside the model's differential scope (never
    without a scope): hematovision/scope.py's rule, as the classifier applies it."""
    if clf.spec.scope is None:
        return scores.argmax(axis=1), np.zeros(len(scores), bool)
    return clf.spec.scope.choose_rows(scores, clf.labels)


def draw_labelled(y: np.ndarray, classes, k: int, rng: np.random.Generator) -> np.ndarray:
    """One draw of a lab's labelled cells: k random cells of each of ``classes`` (a mask over ``y``)."""
    train = np.zeros(len(y), bool)
    for c in classes:
        train[rng.choice(np.flatnonzero(y == c), k, replace=False)] = True
    return train


def evaluate(feats, src_logits, y, theta0, clf, k: int, draws: int, l2: float | None, seed: int,
             grid: tuple[float, ...] = L2_GRID, pseudo_label: bool = False) -> dict:
    counts = {int(c): int((y == c).sum()) for c in np.unique(y)}
    classes = [c for c, n in counts.items() if n > k]
    keep = np.isin(y, classes)
    rng = np.random.default_rng(seed)
    xd = deploy_features(feats, clf.spec.tta)
    acc, src_acc, flag_share, chosen = [], [], [], []
    pooled = {"hits": 0, "src_hits": 0, "total": 0, "flagged": 0, "unflagged_hits": 0, "confidently_wrong": 0}
    confusion = np.zeros((len(clf.labels),) * 2, int)  # adapted model, pooled over draws: rows true, columns predicted
    pseudo = [0, 0]  # pseudo-labelled cells and how many of those labels were right, over all draws
    for _ in range(draws):
        train = draw_labelled(y, classes, k, rng)
        test = keep & ~train
        fit = fit_lab_head(feats[train], y[train], theta0, clf.spec.tta, l2=l2, grid=grid)  # exactly what adapt fits
        theta, calibration = fit.theta, adapted_calibration(feats, y, train, fit, clf)
        if pseudo_label:  # the draw's test cells are the lab's unlabelled pool (transductive)
            theta, taken = pseudo_labelled_head(feats, y, train, test, fit, theta0, clf, calibration)
            right = predicted(xd[taken] @ fit.theta, clf)[0] == y[taken]
            pseudo[0] += int(taken.sum())
            pseudo[1] += int(right.sum())
        pred = predicted(xd[test] @ theta, clf)[0]
        ok = pred == y[test]
        np.add.at(confusion, (y[test], pred), 1)
        src_ok = predicted(src_logits[test], clf)[0] == y[test]
        flagged = flags_of(theta, xd, clf, calibration)[test]
        acc.append(ok.mean()), src_acc.append(src_ok.mean()), flag_share.append(flagged.mean()), chosen.append(fit.l2)
        for key, n in (("hits", ok.sum()), ("src_hits", src_ok.sum()), ("total", test.sum()), ("flagged", flagged.sum()),
                       ("unflagged_hits", (ok & ~flagged).sum()), ("confidently_wrong", (~ok & ~flagged).sum())):
            pooled[key] += int(n)
    total, unflagged = pooled["total"], pooled["total"] - pooled["flagged"]
    return {"k": k, "classes": len(classes), "test_cells_per_draw": int(total / max(draws, 1)),
            "adapted": {"mean": float(np.mean(acc)), "std": float(np.std(acc)), "wilson95_pooled": wilson(pooled["hits"], total),
                        # the same seed gives the same draws to every model: compare two models draw by draw
                        "per_draw": [round(float(a), 4) for a in acc],
                        "flagged_uncertain": {"mean": float(np.mean(flag_share)), "std": float(np.std(flag_share))},
                        "accuracy_not_flagged": (pooled["unflagged_hits"] / unflagged) if unflagged else None,
                        "accuracy_not_flagged_wilson95": wilson(pooled["unflagged_hits"], unflagged) if unflagged else None,
                        "confidently_wrong_share": pooled["confidently_wrong"] / max(total, 1),
                        "l2_chosen": {f"{v:g}": chosen.count(v) for v in sorted(set(chosen))}},
            "source": {"mean": float(np.mean(src_acc)), "std": float(np.std(src_acc)), "wilson95_pooled": wilson(pooled["src_hits"], total)},
            "confusion_pooled": {"labels": list(clf.labels), "rows_true_columns_predicted": confusion.tolist()},
            **({"pseudo_labels": {"per_draw_mean": pseudo[0] / max(draws, 1), "right": pseudo[1] / max(pseudo[0], 1)}}
               if pseudo_label else {}),
            "classes_left_out": [c for c, n in counts.items() if n <= k]}


class FewshotUsageError(ValueError):
    """Several --cells folders need an --out that names each report ({name})."""


def out_paths(cells: list[Path], out: str) -> list[Path]:
    """One report path per cells folder: ``out`` itself for one folder; with several, ``out`` must hold ``{name}``
    (replaced by each folder's name: ``--out reports/fewshot_{name}.json``)."""
    if len(cells) > 1 and "{name}" not in out:
        raise FewshotUsageError(f"--out {out}: with {len(cells)} --cells folders, put {{name}} in --out "
                                "(e.g. reports/fewshot_{name}.json) so that each folder gets its own report.")
    names = [c.name for c in cells]
    if len(set(names)) < len(names):
        raise FewshotUsageError(f"--cells folders share a name ({', '.join(names)}); {{name}} would not tell them apart.")
    return [Path(out.replace("{name}", c.name)) for c in cells]


def report_paths(ap: argparse.ArgumentParser, cells: list[Path], out: str) -> list[Path]:
    """``out_paths`` for a command's --cells and --out; a usage error ends the command with argparse's message."""
    try:
        return out_paths(cells, out)
    except FewshotUsageError as exc:
        ap.error(str(exc))


def run_one(clf, cells_dir: Path, args, command: str) -> dict:
    """The protocol on one lab's cells: every k, ``args.draws`` draws each."""
    cells = cells_root(cells_dir)
    groups = scan_cells(cells, clf.labels)
    names = [lb for lb, files in groups.items() for _ in files]
    images = [load_image(p) for files in groups.values() for p in files]
    print(f"{cells}: {len(images)} cells; extracting features (8 dihedral views each)...", file=sys.stderr)
    feats, src_logits = extract(clf, images)
    if args.jitter_views:  # extra fitting samples of each cell; deployed (test) features stay the dihedral ones
        print(f"{args.jitter_views} jitter views each (training/fewshot_jitter.py)...", file=sys.stderr)
        feats = np.concatenate([feats, jitter_features(clf, images, args.jitter_views, args.seed)], axis=1)
    y = np.array([clf.labels.index(n) for n in names])
    theta0 = source_theta(clf)
    results = []
    for k in args.k:
        r = evaluate(feats, src_logits, y, theta0, clf, k, args.draws, args.l2, args.seed, tuple(args.l2_grid),
                     pseudo_label=args.pseudo_label)
        r["classes_left_out"] = [clf.labels[c] for c in r["classes_left_out"]]
        results.append(r)
        print(f"k={k}: adapted {r['adapted']['mean']:.3f} +- {r['adapted']['std']:.3f} "
              f"(flagged {r['adapted']['flagged_uncertain']['mean']:.3f}, not flagged {r['adapted']['accuracy_not_flagged']}), "
              f"source {r['source']['mean']:.3f} +- {r['source']['std']:.3f} ({r['classes']} classes)", file=sys.stderr)
    return {"model": clf.name, "model_sha256": clf.spec.sha256, "cells": str(cells),
            "count_per_class": {lb: names.count(lb) for lb in dict.fromkeys(names)}, "draws": args.draws, "l2": args.l2,
            "l2_grid": None if args.l2 is not None else list(args.l2_grid), "seed": args.seed,
            "jitter_views": args.jitter_views, "pseudo_label": args.pseudo_label, "command": command, "results": results}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.fewshot", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="wbc")
    ap.add_argument("--cells", type=Path, nargs="+", required=True, help="one or more labs' cells (one report each)")
    ap.add_argument("--k", type=positive_int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--draws", type=positive_int, default=20)
    ap.add_argument("--l2", type=finite_float(0, low_open=True), default=DEFAULT_L2, help="fixed l2 (default: chosen per draw by cross-validation, as adapt does)")
    ap.add_argument("--l2-grid", type=finite_float(0, low_open=True), nargs="+", default=list(L2_GRID), metavar="L2",
                    help="the values the per-draw cross-validation chooses l2 from (default: adapt's, %(default)s); "
                         "a measurement option: adapt itself always uses its default grid")
    ap.add_argument("--jitter-views", type=bounded_int(0, 256), default=0, metavar="N",
                    help="a measurement option: N mild within-lab jitter views per cell as extra head-fitting samples "
                         "(training/fewshot_jitter.py; test cells are scored on their usual views); adapt does not use it")
    ap.add_argument("--pseudo-label", action="store_true",
                    help="a measurement option (reports/fewshot-pseudo_rule.txt): one round of pseudo-labels on the "
                         "draw's test cells that the adapted head does not flag, then one refit; adapt does not use it")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="report path; with several --cells, a path with {name} (the folder's name)")
    args = ap.parse_args(argv)
    if args.l2 is not None and args.l2_grid != list(L2_GRID):
        ap.error("give --l2 (one fixed value) or --l2-grid (values to choose from), not both")
    outs = report_paths(ap, args.cells, args.out)
    clf = load_model(args.model)
    command = "python -m training.fewshot " + " ".join(sys.argv[1:] if argv is None else argv)
    for cells_dir, out in zip(args.cells, outs):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(run_one(clf, cells_dir, args, command), indent=2) + "\n", encoding="utf-8")
        print(out)
    return 0


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
