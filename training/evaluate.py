"""Evaluate a training run (Keras) or a shipped .tflite (through the hematovision API).

    python -m training.evaluate --run runs/wbc
    python -m training.evaluate --model models/wbc.json --data ../shared/data/pbc --split test

A run's evaluation fits the temperature and the uncertain threshold on `val`
and reports `val` and `test`: accuracy, macro-F1, per-class precision/recall,
confusion matrix (PNG + CSV), ECE before and after temperature scaling.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from . import metrics
from .data import load_split, read_splits


def write_confusion(report: dict, labels, stem: Path, title: str) -> None:
    """The report's confusion matrix as ``stem``.csv (rows true, columns predicted) and ``stem``.png titled ``title``."""
    from .plots import confusion_matrix

    cm = np.array(report["confusion_matrix"])
    with open(stem.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["true\\predicted", *labels])
        for label, row in zip(labels, cm):
            w.writerow([label, *row.tolist()])
    confusion_matrix(cm, labels, stem.with_suffix(".png"), title)


def calibrate_and_report(logits: dict[str, np.ndarray], y: dict[str, np.ndarray], labels) -> dict:
    """Temperature + uncertain threshold from val; reports for every split given."""
    temperature = metrics.fit_temperature(logits["val"], y["val"])
    probs = {k: metrics.softmax(v, temperature) for k, v in logits.items()}
    threshold = metrics.choose_uncertain_threshold(probs["val"], y["val"])
    out = {"calibration": {"temperature": temperature, "uncertain_threshold": threshold,
                           "rule": "uncertain when calibrated top-1 confidence < threshold; threshold = lowest confidence "
                                   "at which val predictions above it are >= 99.5 % correct (floor 0.5)"}}
    for split in logits:
        rep = metrics.classification_report(y[split], probs[split], labels)
        rep["ece_uncalibrated"] = metrics.expected_calibration_error(metrics.softmax(logits[split]), y[split])
        rep["uncertain"] = metrics.coverage(probs[split], y[split], threshold)
        out[split] = rep
    return out


def evaluate_run(run_dir: str | Path, *, model=None, splits=None) -> dict:
    import keras

    from hematovision.spec import InputSpec

    from .data import make_dataset

    run = Path(run_dir)
    config = json.loads((run / "config.json").read_text())
    labels = tuple(config["labels"])
    spec = InputSpec.from_json(config["input"])
    if model is None:
        model = keras.models.load_model(run / "best.keras")
    if splits is None:
        a = config["args"]
        splits = {s: load_split(a["data"], s, spec.height, labels, limit=a.get("limit_per_class")) for s in ("val", "test")}
    logits, y = {}, {}
    for split in ("val", "test"):
        ds = make_dataset(splits[split], spec, batch_size=128, training=False)
        logits[split] = model.predict(ds, verbose=0)
        y[split] = splits[split].labels
    np.savez_compressed(run / "logits.npz", **{f"{k}_logits": v for k, v in logits.items()}, **{f"{k}_labels": v for k, v in y.items()})
    result = calibrate_and_report(logits, y, labels)
    write_confusion(result["test"], labels, run / "confusion_test", f"{config['model_name']} (Keras float) - test")
    (run / "evaluation.json").write_text(json.dumps(result, indent=2))
    for split in ("val", "test"):
        r = result[split]
        print(f"{split}: accuracy {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}  ECE {r['ece_uncalibrated']:.4f} -> {r['ece']:.4f}", flush=True)
    return result


def evaluate_model(model_ref: str, data_dir: str | Path, split: str = "test", *, out_dir: str | Path | None = None) -> dict:
    """Score a shipped model through the public API (decode, resize, TFLite, calibration)."""
    import hematovision

    clf = hematovision.load_model(model_ref)
    labels = clf.labels
    rows = [r for r in read_splits(data_dir) if r["split"] == split]
    t0 = time.perf_counter()
    probs = np.stack([
        [p[label] for label in labels]
        for p in (clf.predict(Path(data_dir) / r["path"], cam=False).probabilities for r in rows)
    ])
    seconds = time.perf_counter() - t0
    y = np.array([labels.index(r["label"]) for r in rows])
    rep = metrics.classification_report(y, probs, labels)
    rep["uncertain"] = metrics.coverage(probs, y, clf.spec.uncertain_threshold)
    rep["seconds_per_image_end_to_end"] = seconds / max(len(rows), 1)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_confusion(rep, labels, out / f"confusion_{clf.spec.name}_{split}", f"{clf.spec.name} (int8 TFLite) - {split}")
    return rep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", help="training run folder (Keras float model)")
    g.add_argument("--model", help="shipped model name or .json/.tflite path (through hematovision)")
    p.add_argument("--data", help="dataset folder (with --model)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", help="folder for the confusion matrix and the JSON report")
    args = p.parse_args(argv)
    if args.run:
        evaluate_run(args.run)
        return 0
    if not args.data:
        p.error("--model needs --data")
    rep = evaluate_model(args.model, args.data, args.split, out_dir=args.out)
    text = json.dumps(rep, indent=2)
    if args.out:
        (Path(args.out) / f"evaluation_{Path(args.model).stem}_{args.split}.json").write_text(text)
    print(f"{args.split}: accuracy {rep['accuracy']:.4f}  macro-F1 {rep['macro_f1']:.4f}  ECE {rep['ece']:.4f}  n={rep['n']}")
    return 0


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
