"""Few-shot lab adaptation: refit the dense head on a lab's own labelled cells (numpy only).

DIR/<label>/<image>, labels among the model's classes (a lab may label only some).
The network (.tflite) is reused unchanged; only the GAP -> dense head is refitted.
The head's maths (the regularised softmax regression and the choice of ``l2``) live in
hematovision/lab_head.py.

Accuracy before (source model) and after (adapted, out-of-fold) comes from a
stratified k-fold cross-validation over cells (all views of a cell in one fold).
Temperature and uncertain threshold are refitted on the out-of-fold logits when
there are enough cells, else the source values are kept (and recorded). The OOD
subspace is extended by the principal directions of the lab features' residual,
so the lab's own cells are not flagged; its threshold is kept. The adapted JSON
sets ``"head": {"source": "head_file"}``: the classifier then computes
logits = GAP(features) @ W + b from the head npz, consistent with CAM.
The same out-of-fold predictions check the lab's labels: cells they assign to
another class are listed in the JSON and the log for a specialist to look at
again (hematovision/label_check.py); nothing is relabelled automatically.
The same folds score the lab's cells against the extended reference out of fold: the
batch set-up check (hematovision/batch_shift.py) on them before and after adaptation is
recorded (``adaptation.set_up_check``), and from 30 cells the atypical threshold is
refitted to max(source, their 95th percentile), so that the lab's own set-up is no
longer called unfamiliar while a batch unlike both still is.
Calibration, the OOD extension and the refit live in hematovision/lab_calibration.py.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np

from . import label_check, tta
from .classifier import Classifier, load_model
from .errors import HematoVisionError, ModelFormatError
from .images import IMAGE_SUFFIXES, load_image
from .lab_calibration import batch_verdict, extend_ood, out_of_fold_ood_scores, refit_atypical_threshold, refit_calibration
from .lab_model_files import check_name, earlier_lab_model, staged
from .ood import pooled
from .lab_head import DEFAULT_L2, L2_GRID, HeadFit, deploy_features, fit_lab_head, source_theta, stratified_folds, view_indices
from .preprocessing import prepare
from .registry import sha256_file

__all__ = ["DEFAULT_L2", "L2_GRID", "MIN_CELLS_FOR_CALIBRATION", "MIN_CELLS_PER_CLASS", "adapt", "deploy_features", "extend_ood",
           "extract", "fit_lab_head", "load_cells", "scan_cells", "source_theta", "stratified_folds"]

MIN_CELLS_PER_CLASS = 2  # one to fit, one to test in the cross-validation
MIN_CELLS_FOR_CALIBRATION = 30  # below this, temperature and threshold keep their source values


class AdaptError(HematoVisionError, ValueError):
    """The lab's cells cannot be used to adapt the model (each error says how to fix it)."""


class UnknownLabelError(AdaptError):
    """A folder in the cells directory is not one of the model's classes."""


class TooFewCellsError(AdaptError):
    """A labelled class has fewer than MIN_CELLS_PER_CLASS usable cells."""


class NoCellsError(AdaptError):
    """The cells directory has no DIR/<label>/<image> files."""


class CellsNotFoundError(HematoVisionError, FileNotFoundError):
    """The cells directory does not exist."""


class NoFeatureOutputError(ModelFormatError):
    """The model exposes no feature map or head npz, so its head cannot be refitted."""


class UnreadableImageWarning(UserWarning):
    """Some lab images could not be read; they were skipped."""


class UnlabelledImagesWarning(UserWarning):
    """Images lie directly in the cells folder, outside any DIR/<label>/ folder; they are not used."""


def scan_cells(cells_dir: str | Path, labels: tuple[str, ...]) -> dict[str, list[Path]]:
    """DIR/<label>/<image> -> {label: sorted image paths}; refuses unknown labels and an empty DIR."""
    root = Path(cells_dir)
    if not root.is_dir():
        raise CellsNotFoundError(f"{root}: no such folder; pass --cells DIR with one sub-folder per class (DIR/<label>/<image>).")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in labels]
    if unknown:
        raise UnknownLabelError(f"{root}: folder(s) {', '.join(unknown)} are not classes of this model; rename them to one of "
                                f"{', '.join(labels)} or remove them.")
    loose = [f.name for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if loose:  # a lab that dropped images beside the class folders would otherwise not know they were not used
        warnings.warn(f"{root}: {len(loose)} image(s) directly in the folder are not used (e.g. {loose[0]}); put each in "
                      "DIR/<label>/ to label it.", UnlabelledImagesWarning, stacklevel=2)
    groups = {p.name: sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES) for p in folders}
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        raise NoCellsError(f"{root}: no cell images found; expected DIR/<label>/<image> with labels among {', '.join(labels)}.")
    return groups


def _check_counts(counts: dict[str, int], root: Path) -> None:
    few = {k: n for k, n in counts.items() if n < MIN_CELLS_PER_CLASS}
    if few:
        listed = ", ".join(f"{k}: {n}" for k, n in few.items())
        raise TooFewCellsError(f"{root}: class(es) with fewer than {MIN_CELLS_PER_CLASS} usable cells ({listed}); add cells "
                               "or remove the folder (unlabelled classes keep the source model's behaviour).")
    if len(counts) < 2:  # one class cannot be told from anything: the refit would only pull every cell towards it
        raise TooFewCellsError(f"{root}: cells of one class only ({', '.join(counts)}); label cells of at least 2 classes "
                               "so that the head learns to tell them apart.")


def load_cells(groups: dict[str, list[Path]], root: Path) -> tuple[list[np.ndarray], list[str], list[Path]]:
    """Decode every image; unreadable ones are skipped with one warning listing them."""
    images, names, paths, skipped = [], [], [], []
    for label, path in ((lb, p) for lb, files in groups.items() for p in files):
        try:
            images.append(load_image(path))
        except (HematoVisionError, OSError) as exc:
            skipped.append(f"{path} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
            continue
        names.append(label)
        paths.append(path)
    if skipped:  # listed, skipped, warned; the counts are then checked on what remains
        warnings.warn(f"{len(skipped)} unreadable image(s) skipped: " + "; ".join(skipped), UnreadableImageWarning, stacklevel=2)
    _check_counts({k: names.count(k) for k in groups}, root)
    return images, names, paths


def extract(clf: Classifier, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Images -> pooled features per dihedral view (N, 8, D) and the source model's logits (N, C)."""
    oi, fi = clf.spec.outputs.logits_index, clf.spec.outputs.features_index
    used = view_indices(clf.spec.tta)  # the views the source model averages, as indices into DIHEDRAL8
    feats, logits = [], []  # per cell: (8, D) pooled features, (C,) source logits
    for rgb in images:
        x = prepare(rgb, clf.spec.input)[0]
        outs = [clf.model.run(np.ascontiguousarray(tta.forward(x, k, flip))[None]) for k, flip in tta.DIHEDRAL8]
        f = np.stack([pooled(o[fi][0]) for o in outs])  # GAP is rotation-invariant: the same function of the cell per view
        if clf.logits_from_head:
            z = f[used].mean(axis=0) @ clf.head_weights + clf.head_bias
        else:
            z = np.mean([outs[i][oi][0] for i in used], axis=0)
        feats.append(f)
        logits.append(z)
    return np.asarray(feats, np.float64), np.asarray(logits, np.float64)


def _accuracy(logits: np.ndarray, y: np.ndarray, labels: tuple[str, ...]) -> dict:
    pred = logits.argmax(axis=1)
    per = {labels[c]: float((pred[y == c] == c).mean()) for c in np.unique(y)}
    return {"accuracy": float((pred == y).mean()), "balanced_accuracy": float(np.mean(list(per.values()))), "per_class_recall": per}


def adapt(model: str | Path, cells_dir: str | Path, out_dir: str | Path, *, name: str | None = None,
          l2: float | None = DEFAULT_L2, log=print) -> Path:
    """Fit the adapted head and write OUT_DIR/<name>.json (+ .tflite, .head.npz, .ood.npz); returns the JSON path."""
    clf = load_model(model)
    spec = clf.spec
    if spec.outputs.features_index is None or clf.head_weights is None or clf.head_bias is None:
        raise NoFeatureOutputError(f"{spec.json_path}: model {spec.name!r} has no feature-map output and head npz "
                                   "(outputs.features, cam.head_file); re-export it with `python -m export.tflite`.")
    if l2 is not None and not (math.isfinite(l2) and l2 > 0):
        raise AdaptError(f"l2 must be a positive finite number, not {l2!r}; leave it out to choose it by cross-validation.")
    out_dir, name = Path(out_dir), check_name(name or f"{spec.name}-lab")
    replaced = earlier_lab_model(out_dir, name, source_json=spec.json_path)
    images, names, paths = load_cells(scan_cells(cells_dir, spec.labels), Path(cells_dir))
    y = np.array([spec.labels.index(n) for n in names])
    log(f"{len(y)} cells: " + ", ".join(f"{k} {names.count(k)}" for k in dict.fromkeys(names)) + "; extracting features...")
    feats, src_logits = extract(clf, images)
    theta0 = source_theta(clf)
    fit = fit_lab_head(feats, y, theta0, spec.tta, l2=l2)
    before, after = _accuracy(src_logits, y, spec.labels), _accuracy(fit.oof, y, spec.labels)
    log(f"{fit.folds}-fold cross-validated accuracy on the lab's cells: before {before['accuracy']:.3f}, after "
        f"{after['accuracy']:.3f} (l2 {fit.l2:g}{', chosen by that cross-validation' if l2 is None else ''})")
    with staged(out_dir, name) as staging:  # all files or none; an earlier adaptation is replaced only at the end
        _write(clf, staging, name, fit, feats, y, paths, before, after, log)
    if replaced is not None:
        log(f"replaced the earlier adaptation {name!r} (of {replaced['adaptation'].get('date', 'unknown date')})")
    log(f"wrote {out_dir / f'{name}.json'}")
    return out_dir / f"{name}.json"


def _calibration(spec, oof: np.ndarray, y: np.ndarray, log) -> dict:
    if len(y) < MIN_CELLS_FOR_CALIBRATION:
        log(f"only {len(y)} cells (< {MIN_CELLS_FOR_CALIBRATION}): temperature and uncertain threshold keep the source values")
        return {**spec.raw.get("calibration", {}), "adapted": False,
                "note": f"kept from {spec.name}: fewer than {MIN_CELLS_FOR_CALIBRATION} lab cells to refit them"}
    t, thr = refit_calibration(oof, y, counted=None if spec.scope is None else spec.scope.inside(spec.labels))
    log(f"refitted on out-of-fold logits: temperature {t:.3f}, uncertain threshold {thr:.3f}")
    return {"temperature": t, "uncertain_threshold": thr, "adapted": True,
            "rule": "temperature: NLL-optimal on the lab's out-of-fold logits; threshold: lowest confidence at which "
                    "out-of-fold predictions above it are >= 99.5 % correct (floor 0.5); with a lab scope, among the "
                    "cells whose first choice it counts (the others are flagged anyway)"}


def _set_up_check(clf, feats, y, log) -> tuple[dict, float | None]:
    """The batch set-up check on the lab's cells before and after adaptation, and the adapted atypical threshold.

    After: out-of-fold scores (lab_calibration.out_of_fold_ood_scores) with the source thresholds. The atypical
    threshold is refitted from the same scores (lab_calibration.refit_atypical_threshold) with at least
    MIN_CELLS_FOR_CALIBRATION cells; with fewer it is kept, and the lab's set-up may still be called unfamiliar."""
    spec, ood = clf.spec, clf.ood
    pooled = deploy_features(feats, spec.tta)[:, :-1]
    oof = out_of_fold_ood_scores(ood, feats, pooled, stratified_folds(y)[0])
    before = batch_verdict(ood.score(pooled.astype(np.float32)), ood.threshold, spec.atypical_threshold)
    after = batch_verdict(oof, ood.threshold, spec.atypical_threshold)
    refit = None
    if spec.atypical_threshold is not None and len(y) >= MIN_CELLS_FOR_CALIBRATION:
        refit = refit_atypical_threshold(spec.atypical_threshold, oof)

    def said(v: dict) -> str:
        share = "" if v["atypical_share"] is None else f"{100 * v['atypical_share']:.0f} % atypical, "
        return f"{share}{100 * v['out_of_distribution_share']:.0f} % out of distribution"

    log(f"set-up check on the lab's {len(y)} cells: source model {said(before)}"
        f"{' (called unfamiliar)' if before['batch_called_shifted'] else ''}; adapted, out of fold: {said(after)}")
    if refit is not None:
        log(f"atypical threshold refitted to the lab's cells: {spec.atypical_threshold:.4g} -> {refit:.4g} (a later batch "
            "is called unfamiliar only when it is unlike both the training lab's cells and these)")
    elif spec.atypical_threshold is not None:
        log(f"atypical threshold kept (fewer than {MIN_CELLS_FOR_CALIBRATION} cells): this set-up may still be called "
            "unfamiliar; label more cells")
    check = {"before": before, "after_out_of_fold": after,
             "rule": "hematovision/batch_shift.py on the lab's cells as one batch, with the source thresholds; after: each "
                     "cross-validation fold scored against the OOD reference extended with the other folds' cells"}
    return check, refit


def _write(clf, out: Path, name: str, fit: HeadFit, feats, y, paths, before, after, log) -> None:
    spec = clf.spec
    # metrics and the float Keras reference describe the source head, not this one
    data = {k: v for k, v in json.loads(json.dumps(spec.raw)).items() if k not in ("metrics", "float_reference")}
    out.mkdir(parents=True, exist_ok=True)
    tflite, head = out / f"{name}.tflite", out / f"{name}.head.npz"
    shutil.copyfile(spec.tflite_path, tflite)  # unchanged network: same sha256 as the source
    np.savez(head, weights=fit.theta[:-1].astype(np.float32), bias=fit.theta[-1].astype(np.float32))
    morph = (data.get("morphology") or {}).get("reference_file")
    if morph and (spec.json_path.parent / morph).exists() and not (out / morph).exists():
        shutil.copyfile(spec.json_path.parent / morph, out / morph)
    calibration = _calibration(spec, fit.oof, y, log)
    data.update(name=name, file=tflite.name, head={"source": "head_file", "meaning": "logits = GAP(features) @ weights + bias "
                "from cam.head_file (the .tflite logits output is not used)"}, calibration=calibration)
    check = label_check.label_disagreements(fit.oof, y, [f"{p.parent.name}/{p.name}" for p in paths], spec.labels,
                                            temperature=calibration.get("temperature", 1.0))
    log(label_check.summary(check, len(y)))
    data["cam"] = {**data.get("cam", {}), "head_file": head.name, "head_sha256": sha256_file(head)}
    set_up = None
    if clf.ood is not None:
        set_up, atypical = _set_up_check(clf, feats, y, log)
        ood, n_new = extend_ood(clf.ood, feats)
        ood.save(out / f"{name}.ood.npz")
        data["ood"] = {**{k: v for k, v in data["ood"].items() if k != "measured"}, "file": f"{name}.ood.npz",
                       "sha256": sha256_file(out / f"{name}.ood.npz"), "extended": {"added_components": n_new, "from_cells": len(y),
                       "rule": "top residual principal directions of the lab features (90 % energy, <= 16); threshold kept"}}
        if atypical is not None:
            data["ood"].update(atypical_threshold=atypical, atypical_threshold_rule=(
                f"max(source {clf.spec.atypical_threshold:.6g}, 95th percentile of the lab cells' out-of-fold scores "
                "against the extended reference): hematovision/lab_calibration.py refit_atypical_threshold"))
    data["adaptation"] = {
        "method": "few-shot head refit (hematovision/adapt.py): L2-regularised softmax regression towards the source head "
                  "on pooled features of the lab's cells and their 8 dihedral views, class-balanced",
        "source_model": {"name": spec.name, "sha256": spec.sha256, "json": str(spec.json_path),
                         "head_sha256": sha256_file(spec.head_path)},
        "l2": fit.l2, "l2_selection": {"grid_oof_accuracy": {f"{v:g}": a for v, a in fit.oof_accuracy_by_l2.items()},
                                        "rule": "best out-of-fold accuracy, then NLL" if len(fit.oof_accuracy_by_l2) > 1
                                        else "given (--l2)"},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cells": {"count_per_class": {lb: int((y == i).sum()) for i, lb in enumerate(spec.labels) if (y == i).any()},
                  "unlabelled_classes_keep_source_behaviour": [lb for i, lb in enumerate(spec.labels) if not (y == i).any()],
                  "image_sha256": [sha256_file(p) for p in paths]},
        "cross_validation": {"folds": fit.folds, "unit": "cell (all views of a cell in one fold)", "before": before, "after": after},
        "label_check": {"rule": label_check.RULE, "cells": [r.to_json() for r in check]},
        "set_up_check": set_up,
    }
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
