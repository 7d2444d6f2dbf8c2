"""Probe: does fine-tuning the whole network on a lab's few cells beat refitting the head? (TensorFlow)

    python -m training.finetune_probe --model models/wbc.keras --cells ../shared/data/otherlabs/zheng2 \
        --k 10 --draws 3 --steps 150 --pbc ../shared/data/pbc --out reports/finetune_probe_wbc_zheng2.json

A measurement to decide the next step of few-shot adaptation, not a shipped path.
Per draw (k cells per class drawn with the draw's seed; classes with fewer than
k + 1 cells left out; the rest of the lab's cells as test), on the float Keras model:

* source: the model as it is;
* head: ``adapt``'s head refit (hematovision/adapt.py, l2 by cross-validation) on
  the float model's pooled features of the same k cells (8 dihedral views);
* finetuned: every weight trained (batch-norm frozen in inference mode, see
  training-notes) for ``--steps`` Adam steps at ``--lr``; each batch is 32
  augmented lab cells (dihedral, +-12 % zoom, half-strength colour jitter) and 32
  PBC training images with the crosslab augmentation at half weight, so that
  classes the lab did not label are not forgotten.

All three are scored on the same test cells with the 8 dihedral views averaged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from hematovision.adapt import MIN_CELLS_PER_CLASS, deploy_features, fit_lab_head, scan_cells
from hematovision.images import load_image
from hematovision.preprocessing import resize
from training.crosslab import cells_root
from training.fewshot import draw_labelled
from training.metrics import wilson

SIZE = 128


def dihedral8(x: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of the square of a batch (N, H, W, C)."""
    views = []
    for t in (x, np.transpose(x, (0, 2, 1, 3))):
        views += [t, t[:, :, ::-1], t[:, ::-1], t[:, ::-1, ::-1]]
    return views


def scaled(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 127.5 - 1.0  # the models' normalisation (x * 2/255 - 1)


def tta_logits(model, x: np.ndarray) -> np.ndarray:
    return np.mean([model.predict(scaled(v), verbose=0, batch_size=64) for v in dihedral8(x)], axis=0)


def draw(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The draw with this seed: k cells of every class (``training.fewshot``'s draw, one generator per seed)."""
    return draw_labelled(y, np.unique(y), k, np.random.default_rng(seed))


def head_only(model, x, y, train) -> np.ndarray:
    import keras

    pooled = keras.Model(model.inputs, model.get_layer("gap").output)
    feats = np.stack([pooled.predict(scaled(v), verbose=0, batch_size=64) for v in dihedral8(x)], axis=1)
    w, b = model.get_layer("logits").get_weights()
    fit = fit_lab_head(feats[train], y[train], np.vstack([w, b[None]]).astype(np.float64), "dihedral8")
    return deploy_features(feats[~train], "dihedral8") @ fit.theta


def finetune(model, x_lab, y_lab, pbc, *, steps: int, lr: float, seed: int):
    import keras
    import tensorflow as tf

    from training import augment
    from training.model import set_backbone_trainable

    set_backbone_trainable(model, True, bn="frozen")
    rng = np.random.default_rng(seed)
    pbc_aug = augment.make_augment("crosslab", out_size=SIZE)
    opt, loss_fn = keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    weights = tf.concat([tf.ones(32), 0.5 * tf.ones(32)], 0)
    for _ in range(steps):
        il, ip = rng.integers(0, len(y_lab), 32), rng.integers(0, len(pbc.labels), 32)
        lab = augment.colour(augment.zoom_shift(augment.dihedral(tf.constant(x_lab[il], tf.float32) / 255.0)), 0.5)
        src = pbc_aug(tf.constant(pbc.images[ip], tf.float32) / 255.0)
        x = tf.concat([lab, src], 0) * 2.0 - 1.0
        yy = tf.constant(np.concatenate([y_lab[il], pbc.labels[ip]]), tf.int32)
        with tf.GradientTape() as tape:
            loss = loss_fn(yy, model(x, training=True), sample_weight=weights)
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return model


def score(logits: np.ndarray, y: np.ndarray) -> dict:
    correct = int((logits.argmax(axis=1) == y).sum())
    return {"accuracy": correct / len(y), "ci95": list(wilson(correct, len(y))), "n": len(y)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.finetune_probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a float .keras model (GAP -> dense head named 'logits')")
    ap.add_argument("--cells", type=Path, required=True)
    ap.add_argument("--pbc", type=Path, required=True, help="PBC folder with splits.csv (replay images)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import keras

    from training.data import load_split

    root = cells_root(args.cells)
    labels = tuple(json.loads(Path(args.model).with_suffix(".json").read_text())["labels"])  # the model's JSON beside it
    groups = {lb: v for lb, v in scan_cells(root, labels).items() if len(v) >= max(args.k + 1, MIN_CELLS_PER_CLASS)}
    files = [p for v in groups.values() for p in v]
    y = np.array([labels.index(lb) for lb, v in groups.items() for _ in v])
    x = np.stack([resize(load_image(p), SIZE, SIZE) for p in files])
    pbc = load_split(args.pbc, "train", 160, labels, limit=150)
    runs = []
    for seed in range(args.draws):
        t0, train = time.time(), draw(y, args.k, seed)
        model = keras.saving.load_model(args.model, compile=False)
        row = {"seed": seed, "source": score(tta_logits(model, x[~train]), y[~train]),
               "head": score(head_only(model, x, y, train), y[~train])}
        model = finetune(model, x[train], y[train], pbc, steps=args.steps, lr=args.lr, seed=seed)
        row["finetuned"] = score(tta_logits(model, x[~train]), y[~train])
        row["seconds"] = round(time.time() - t0, 1)
        runs.append(row)
        print(f"draw {seed}: source {row['source']['accuracy']:.3f} head {row['head']['accuracy']:.3f} "
              f"finetuned {row['finetuned']['accuracy']:.3f} ({row['seconds']} s)", file=sys.stderr, flush=True)
    mean = {m: float(np.mean([r[m]["accuracy"] for r in runs])) for m in ("source", "head", "finetuned")}
    report = {"model": str(args.model), "cells": str(root), "classes": list(groups), "k": args.k, "steps": args.steps,
              "lr": args.lr, "draws": runs, "mean_accuracy": mean,
              "command": "python -m training.finetune_probe " + " ".join(sys.argv[1:] if argv is None else argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(args.out, mean, file=sys.stderr)
    return 0


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
