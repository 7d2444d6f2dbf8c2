"""Cross-lab report: how a shipped model does on other labs' cells, through the public API.

    python -m training.crosslab --model wbc \
        --labelled ../shared/data/otherlabs/zheng1 ../shared/data/otherlabs/zheng2 \
        --pbc ../shared/data/pbc --blasts ../shared/data/all --bccd ../shared/data/bccd \
        --out reports/wbc_crosslab.json

For each labelled folder (``DIR/<label>/<image>``, or ``DIR/images/<label>/<image>``):
accuracy with a 95 % Wilson interval, macro-F1 over the classes present,
per-class recall, the confusion matrix, the share flagged (uncertain or
out-of-distribution), the accuracy of the cells NOT flagged, and the share that
is confidently wrong (not flagged and wrong: the worst failure).
``--pbc``: the same figures on the model's own test split. ``--blasts``:
B-lymphoblasts (ALL malignant classes) cut out of their fields by the core's
cell detector at PBC framing: the share flagged, and the share confidently
named as a mature normal cell (the most dangerous error). ``--bccd``: another
lab's unlabelled white-cell crops (flagged share, predicted differential).
``--reframe``: classify each labelled cell after ``hematovision.cells.reframe``
(padding tight crops to PBC-like framing) as a second figure beside the plain one.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from hematovision.images import IMAGE_SUFFIXES, load_image

from .metrics import wilson

#: Classes a white-cell model names that are mature normal cells.
MATURE_NORMAL = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")
ALL_MALIGNANT = ("early_pre_b", "pre_b", "pro_b")


def cells_root(folder: str | Path) -> Path:
    """``folder/images`` where it exists (the otherlabs layout, beside labels.csv), else ``folder`` itself."""
    root = Path(folder)
    return root / "images" if (root / "images").is_dir() else root


def labelled_cells(folder: str | Path) -> list[tuple[Path, str]]:
    """(image path, label) for every image under ``folder/<label>/`` (or ``folder/images/<label>/``)."""
    root = cells_root(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of <label>/<image> subfolders")
    cells = [(p, d.name) for d in sorted(root.iterdir()) if d.is_dir()
             for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not cells:
        raise FileNotFoundError(f"no images under {root}/<label>/")
    return cells


def _interval(correct: int, n: int) -> dict:
    lo, hi = wilson(correct, n)
    return {"value": correct / n if n else None, "ci95": [lo, hi], "n": n}


def score(preds, labels: list[str]) -> dict:
    """Accuracy, macro-F1 over the classes present, recall, confusion, flagged and confidently-wrong shares."""
    y, yhat = np.array(labels), np.array([p.label for p in preds])
    flagged = np.array([p.uncertain or bool(p.out_of_distribution) for p in preds])
    correct = y == yhat
    present = sorted(set(labels))
    names = sorted(set(labels) | set(yhat.tolist()))
    f1s, recall = [], {}
    for c in present:
        tp = int(np.sum((y == c) & (yhat == c)))
        prec = tp / max(int(np.sum(yhat == c)), 1)
        rec = tp / int(np.sum(y == c))
        recall[c] = _interval(tp, int(np.sum(y == c)))
        f1s.append(0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec))
    keep = ~flagged
    return {
        "n": len(labels),
        "accuracy": _interval(int(correct.sum()), len(labels)),
        "macro_f1_present_classes": float(np.mean(f1s)),
        "per_class_recall": recall,
        "confusion": {"true_rows": present, "predicted_columns": names,
                      "matrix": [[int(np.sum((y == t) & (yhat == q))) for q in names] for t in present]},
        "flagged": _interval(int(flagged.sum()), len(labels)),
        "flagged_out_of_distribution": float(np.mean([bool(p.out_of_distribution) for p in preds])),
        "accuracy_not_flagged": _interval(int(correct[keep].sum()), int(keep.sum())),
        "confidently_wrong": _interval(int(np.sum(keep & ~correct)), len(labels)),
    }


def outside_scope_cells(preds, labels: list[str], scope) -> dict | None:
    """A scoped model (hematovision/scope.py) on cells of classes it does not count: the share flagged (every one
    should be) and the share whose ``outside_scope`` names the true class. None without a scope or such cells."""
    if scope is None:
        return None
    idx = [i for i, lab in enumerate(labels) if lab not in scope.classes]
    if not idx:
        return None
    flagged = sum(preds[i].uncertain or bool(preds[i].out_of_distribution) for i in idx)
    named = sum(preds[i].outside_scope == labels[i] for i in idx)
    return {"n": len(idx), "flagged": _interval(flagged, len(idx)), "first_choice_names_the_class": _interval(named, len(idx)),
            "counts": dict(sorted(Counter(labels[i] for i in idx).items()))}


def labelled_report(clf, folder: str | Path, *, reframe: bool = False, red_cell_scale: bool = False) -> dict:
    cells = labelled_cells(folder)
    unknown = sorted({lab for _, lab in cells} - set(clf.labels))
    if unknown:
        raise ValueError(f"{folder}: label folders {unknown} are not classes of {clf.name} ({', '.join(clf.labels)})")
    images = [load_image(p) for p, _ in cells]
    labels = [lab for _, lab in cells]
    out = {"folder": str(folder), "counts": dict(sorted(Counter(labels).items())),
           "plain": score([clf.predict(im, cam=False) for im in images], labels)}
    if reframe:
        from hematovision.cells.reframe import reframe_cell

        out["reframed"] = score([clf.predict(reframe_cell(im), cam=False) for im in images], labels)
    if red_cell_scale:
        out["red_cell_scaled"] = red_cell_scaled(clf, images, labels)
    return out


def red_cell_scaled(clf, images: list[np.ndarray], labels: list[str]) -> dict:
    """Score the cells framed 5 red cells wide, the lab's red-cell size calibrated on its own images (median).

    Crops may differ in size (zheng1's do) but must share one camera and magnification: the value is in pixels.
    When fewer than half the images show enough red cells (tight single-cell crops) the calibration is not
    trusted and nothing is scored: on zheng1 the circles found are the white cell and its lobes.
    """
    from hematovision.cells.red_cells import calibrate
    from hematovision.cells.reframe import frame_to_red_cells

    cal = calibrate((str(i), im) for i, im in enumerate(images))
    facts = {"red_cell_px": round(cal.red_cell_px, 2), "images_measured": cal.images_measured,
             "spread": round(cal.spread, 3)}
    if cal.images_measured < len(images) / 2:
        return {**facts, "not_scored": f"only {cal.images_measured} of {len(images)} images show enough red cells"}
    return {**score([clf.predict(frame_to_red_cells(im, cal.red_cell_px), cam=False) for im in images], labels),
            **facts}


def pbc_report(clf, data: str | Path) -> dict:
    from .data import read_splits

    rows = [r for r in read_splits(data) if r["split"] == "test"]
    preds = [clf.predict(Path(data) / r["path"], cam=False) for r in rows]
    labels = [r["label"] for r in rows]
    out = score(preds, labels)
    outside = outside_scope_cells(preds, labels, clf.spec.scope)
    return out if outside is None else {**out, "cells_of_classes_outside_the_scope": outside}


def blast_crops(all_dir: str | Path, *, per_class: int | None = None) -> list[np.ndarray]:
    """White cells cut from the ALL set's malignant fields at PBC framing (red cell ~16 px there)."""
    from hematovision.cells.detection import crop_cells

    from .data import FACTS, read_splits

    rows = [r for r in read_splits(all_dir) if r["label"] in ALL_MALIGNANT]
    if per_class is not None:
        rows = [r for c in ALL_MALIGNANT for r in [q for q in rows if q["label"] == c][:per_class]]
    crops = []
    for r in rows:
        rgb = load_image(Path(all_dir) / r["path"])
        red_px = FACTS["all"].red_cell_fraction * float(np.sqrt(rgb.shape[0] * rgb.shape[1]))
        crops.extend(c.image for c in crop_cells(rgb, red_cell_px=red_px))
    return crops


def blast_report(clf, all_dir: str | Path, *, per_class: int | None = None) -> dict:
    preds = [clf.predict(c, cam=False) for c in blast_crops(all_dir, per_class=per_class)]
    n = len(preds)
    flagged = sum(p.uncertain or bool(p.out_of_distribution) for p in preds)
    named_mature = sum(not (p.uncertain or p.out_of_distribution) and p.label in MATURE_NORMAL for p in preds)
    return {"n_crops": n, "flagged": _interval(flagged, n),
            "confidently_named_mature_normal": _interval(named_mature, n),
            "confident_labels": dict(Counter(p.label for p in preds if not (p.uncertain or p.out_of_distribution)))}


def bccd_report(clf, bccd_dir: str | Path) -> dict:
    from .robustness import bccd_crops

    preds = [clf.predict(im, cam=False) for _, im in bccd_crops(bccd_dir)]
    flagged = sum(p.uncertain or bool(p.out_of_distribution) for p in preds)
    return {"n": len(preds), "flagged": _interval(flagged, len(preds)),
            "predicted_distribution_not_flagged": dict(Counter(p.label for p in preds if not p.uncertain))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.crosslab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model name or JSON path")
    p.add_argument("--labelled", nargs="*", default=[], help="labelled other-lab folders (DIR/<label>/<image>)")
    p.add_argument("--pbc", help="the model's own dataset folder (test split)")
    p.add_argument("--blasts", help="ALL dataset folder: blasts cut out at PBC framing")
    p.add_argument("--blasts-per-class", type=int, help="at most N ALL images per malignant class")
    p.add_argument("--bccd", help="BCCD folder (boxes.csv + images/)")
    p.add_argument("--reframe", action="store_true", help="also score labelled cells reframed to PBC-like framing")
    p.add_argument("--red-cell-scale", action="store_true",
                   help="also score labelled cells framed 5 red cells wide (the folder's red-cell size, calibrated on its images)")
    p.add_argument("--out", help="write the report JSON here")
    args = p.parse_args(argv)

    import hematovision

    clf = hematovision.load_model(args.model)
    report: dict = {"model": clf.name, "sha256": clf.spec.sha256,
                    "command": "python -m training.crosslab " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "labelled": {Path(f).name: labelled_report(clf, f, reframe=args.reframe,
                                                                  red_cell_scale=args.red_cell_scale)
                                 for f in args.labelled}}
    if args.pbc:
        report["pbc_test"] = pbc_report(clf, args.pbc)
    if args.blasts:
        report["blasts_pbc_framing"] = blast_report(clf, args.blasts, per_class=args.blasts_per_class)
    if args.bccd:
        report["bccd_wbc_crops"] = bccd_report(clf, args.bccd)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(summary(report))
    return 0


def summary(report: dict) -> str:
    """One line per set: accuracy [CI], flagged, accuracy of the cells not flagged."""
    def line(name, s):
        a, f, u = s["accuracy"], s["flagged"], s["accuracy_not_flagged"]
        un = "-" if u["value"] is None else f"{u['value']:.3f} [{u['ci95'][0]:.3f}, {u['ci95'][1]:.3f}] of {u['n']}"
        return (f"{name}: n={s['n']} accuracy {a['value']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}] "
                f"macro-F1 {s['macro_f1_present_classes']:.3f} flagged {f['value']:.3f} not-flagged accuracy {un} "
                f"confidently wrong {s['confidently_wrong']['value']:.3f}")
    lines = [f"{report['model']} ({report['sha256'][:12]})"]
    for name, r in report["labelled"].items():
        lines += [line(name, r["plain"])] + [line(f"{name} {k.replace('_', ' ')}", r[k]) if "n" in r[k]
                                             else f"{name} {k.replace('_', ' ')}: {r[k]['not_scored']}"
                                             for k in ("reframed", "red_cell_scaled") if k in r]
    if "pbc_test" in report:
        lines.append(line("pbc test", report["pbc_test"]))
        o = report["pbc_test"].get("cells_of_classes_outside_the_scope")
        if o:
            lines.append(f"pbc test, classes outside the scope: n={o['n']} flagged {o['flagged']['value']:.3f} "
                         f"first choice names the class {o['first_choice_names_the_class']['value']:.3f}")
    if "blasts_pbc_framing" in report:
        b = report["blasts_pbc_framing"]
        lines.append(f"blasts: n={b['n_crops']} flagged {b['flagged']['value']:.3f} "
                     f"confidently named mature normal {b['confidently_named_mature_normal']['value']:.3f}")
    if "bccd_wbc_crops" in report:
        lines.append(f"bccd crops: n={report['bccd_wbc_crops']['n']} flagged {report['bccd_wbc_crops']['flagged']['value']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
