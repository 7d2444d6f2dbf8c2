"""Train a HematoVision classifier.

    python -m training.train --dataset pbc --data ../shared/data/pbc \
        --weights ../shared/weights/mobilenet_v2_0.35_imagenet_notop.weights.h5 \
        --img-size 128 --alpha 0.35 --epochs 12 --out runs/wbc

Writes to the run folder: config.json, history.csv + curves.png, checkpoints
(best.keras by --select, highest val accuracy by default; last.keras; backup/ for --resume), backbone.weights.h5 (for
--init-from), logits of val/test and evaluation.json (see training.evaluate).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from hematovision.spec import InputSpec
from hematovision.stain_norm import fit_reference

from .data import DATASETS, FACTS, Split, class_weights, load_split, make_dataset


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    p.add_argument("--data", required=True, help="folder with splits.csv and images/")
    p.add_argument("--weights", default="none", help="imagenet | none | PATH to backbone .weights.h5")
    p.add_argument("--init-from", help="run folder whose backbone.weights.h5 initialises the backbone (overrides --weights)")
    p.add_argument("--init-model", help="a run's best.keras (same architecture): start from all its weights, head included "
                                        "(a second, lower-learning-rate stage; use with --head-epochs 0)")
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--alpha", type=float, default=0.35)
    p.add_argument("--epochs", type=int, default=12, help="fine-tuning epochs (after the head epochs)")
    p.add_argument("--head-epochs", type=int, default=2, help="epochs training only the head, backbone frozen")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate of the fine-tuning cosine schedule")
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--bn", choices=("frozen", "momentum"), default="frozen",
                   help="fine-tuning BatchNorm: frozen (inference mode, ImageNet statistics) or momentum (trains, momentum 0.9)")
    p.add_argument("--augment", choices=("none", "basic", "lab", "crosslab"), default="lab",
                   help="crosslab: wide zoom, stain-matrix and strong colour jitter, colour transfer, optics (training/augment.py)")
    p.add_argument("--colour-pool", help="npz from python -m training.colour_pool (crosslab colour transfer targets)")
    p.add_argument("--decode-size", type=int,
                   help="decode training images at this size (> --img-size) so zoomed-in cells keep detail; "
                        "augmentation resizes to --img-size")
    p.add_argument("--output-stride", type=int, choices=(32, 16), default=32,
                   help="16: last MobileNetV2 stage at twice the resolution (8x8 map at 128 px) for a CAM that localises")
    p.add_argument("--stain-norm", choices=("none", "reinhard"), default="none",
                   help="Reinhard stain normalization to the mean L*a*b* statistics of the training images "
                        "(stored in the model JSON and applied everywhere the model runs)")
    p.add_argument("--no-class-weights", action="store_true", help="do not reweight classes by inverse frequency")
    p.add_argument("--select", choices=("val_loss", "val_accuracy"), default="val_accuracy",
                   help="checkpoint kept as best.keras: highest val accuracy (earliest of ties; the default, as the shipped "
                        "wbc was made) or lowest val loss (better where val accuracy saturates, e.g. the ALL set: ties "
                        "there picked an early, high-learning-rate epoch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-per-class", type=int, help="use only N images per class and split (smoke tests)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--out", required=True, help="run folder")
    return p.parse_args(argv)


def _selected_epoch(history: dict, select: str) -> int | None:
    """1-based fine-tuning epoch that ModelCheckpoint kept (first of ties, as it saves only on improvement)."""
    values = history.get(select)
    if not values:
        return None
    best = min(values) if select == "val_loss" else max(values)
    return values.index(best) + 1


def main(argv=None) -> int:
    """Train a run into ``--out``: head phase, fine-tuning, BN check, summary, curves and evaluation."""
    args = parse_args(argv)
    import keras

    from . import evaluate
    from .model import backbone

    keras.utils.set_random_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = DATASETS[args.dataset]
    t0 = time.time()
    splits, train_images, spec = _load_data(args, labels)
    weights = class_weights(splits["train"].labels, len(labels)) if not args.no_class_weights else None
    config = run_config(args, argv, spec=spec, train_labels=splits["train"].labels, weights=weights)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    model, pool = _build_model(args, labels, config=config, out=out)
    train_ds, val_ds = _datasets(args, splits, train_images, spec, colour_pool=pool)
    history_csv = out / "history.csv"
    t_train = time.time()
    _train_head(model, args, train_ds, val_ds, class_weight=weights, out=out, history_csv=history_csv)
    hist = _fine_tune(model, args, train_ds, val_ds, class_weight=weights, n_train=len(splits["train"].labels),
                      out=out, history_csv=history_csv)
    train_seconds = time.time() - t_train
    model.save(out / "last.keras")  # the final epoch too, for inspection; best.keras is what ships
    if (out / "best.keras").exists():
        model.load_weights(out / "best.keras")
    bn_check = check_batch_norm(model, splits["train"], spec,
                                fit_accuracy=float(hist.history["accuracy"][-1]) if hist.history.get("accuracy") else None)
    backbone(model).save_weights(out / "backbone.weights.h5")
    summary = {
        "train_seconds": round(train_seconds, 1),
        "bn_check": bn_check,
        "best_val_accuracy": float(max(hist.history.get("val_accuracy", [0]))),
        "select": args.select,
        "selected_fine_tune_epoch": _selected_epoch(hist.history, args.select),
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    from .plots import training_curves

    training_curves(history_csv, out / "curves.png")
    evaluate.evaluate_run(out, model=model, splits=splits)
    print(f"done in {time.time() - t0:.0f}s -> {out}", flush=True)
    return 0


def _load_data(args: argparse.Namespace, labels) -> tuple[dict[str, Split], Split, InputSpec]:
    """(splits, training images, input spec): the three splits at --img-size, training images at --decode-size
    when larger (else the train split itself), and the spec with the stain reference fitted on train if asked."""
    t0 = time.time()
    splits = {s: load_split(args.data, s, args.img_size, labels, limit=args.limit_per_class) for s in ("train", "val", "test")}
    train_images = splits["train"]
    if args.decode_size and args.decode_size != args.img_size:
        train_images = load_split(args.data, "train", args.decode_size, labels, limit=args.limit_per_class)
    stain = fit_reference(splits["train"].images) if args.stain_norm == "reinhard" else None
    spec = InputSpec(height=args.img_size, width=args.img_size, stain=stain)
    print(f"decoded {', '.join(f'{k}={len(v.labels)}' for k, v in splits.items())} images in {time.time() - t0:.1f}s", flush=True)
    return splits, train_images, spec


def run_config(args: argparse.Namespace, argv, *, spec: InputSpec, train_labels: np.ndarray, weights: dict | None,
               program: str = "training.train", extra_args: dict | None = None) -> dict:
    """The run's config.json: dataset and its facts, labels, input spec, arguments, command, counts, machine.

    ``program`` is the module the command line ran (``training.cam_supervised`` fine-tunes with the same
    run folder); ``extra_args`` are facts about the run not on its command line (merged under ``args``).
    """
    import keras
    import tensorflow as tf

    labels = DATASETS[args.dataset]
    return {
        "dataset": args.dataset,
        "model_name": FACTS[args.dataset].model_name,
        "task": FACTS[args.dataset].task,
        "dataset_facts": FACTS[args.dataset].to_json(),
        "labels": list(labels),
        "input": spec.to_json(),
        "args": {**(extra_args or {}), **vars(args)},
        "command": f"python -m {program} " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "train_counts": {labels[i]: int(c) for i, c in enumerate(np.bincount(train_labels, minlength=len(labels)))},
        "class_weights": {labels[i]: round(w, 4) for i, w in (weights or {}).items()},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version()},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
    }


def _build_model(args: argparse.Namespace, labels, *, config: dict, out: Path):
    """(model, colour pool or None): the network initialised from --weights / --init-from, the colour pool loaded
    (and recorded in ``config``, rewritten to the run folder), then --init-model's weights when given."""
    from .model import build_model

    init = str(Path(args.init_from) / "backbone.weights.h5") if args.init_from else args.weights
    model = build_model(len(labels), img_size=args.img_size, alpha=args.alpha, weights=init, dropout=args.dropout,
                        output_stride=args.output_stride)
    pool = None
    if args.colour_pool:
        with np.load(args.colour_pool) as saved:
            pool, sources = saved["stats"], [str(x) for x in saved["sources"]]
        config["colour_pool"] = {"file": args.colour_pool, "images": int(len(pool)), "sources": sources}
        (out / "config.json").write_text(json.dumps(config, indent=2))
    if args.init_model:
        model.load_weights(args.init_model)
    return model, pool


def _datasets(args: argparse.Namespace, splits: dict[str, Split], train_images: Split, spec: InputSpec, *, colour_pool=None):
    """(train, val) tf.data pipelines: train shuffled and augmented (resized to --img-size when decoded larger)."""
    from .augment import make_augment

    augment = make_augment(args.augment, out_size=args.img_size if train_images is not splits["train"] else None,
                           colour_pool=colour_pool)
    train_ds = make_dataset(train_images, spec, batch_size=args.batch_size, training=True, augment=augment, seed=args.seed)
    return train_ds, make_dataset(splits["val"], spec, batch_size=128, training=False)


def _loss():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _train_head(model, args: argparse.Namespace, train_ds, val_ds, *, class_weight: dict | None, out: Path,
                history_csv: Path) -> None:
    """Phase 1: the head alone for --head-epochs (saved as head.keras); with --resume, head.keras is reloaded instead."""
    import keras

    head_ckpt = out / "head.keras"
    if args.resume and head_ckpt.exists():
        model.load_weights(head_ckpt)
        print("resume: head phase already done", flush=True)
    elif args.head_epochs > 0:
        print(f"phase 1: head only, {args.head_epochs} epoch(s)", flush=True)
        model.compile(keras.optimizers.Adam(args.head_lr), _loss(), metrics=["accuracy"])
        model.fit(train_ds, validation_data=val_ds, epochs=args.head_epochs, class_weight=class_weight,
                  callbacks=[keras.callbacks.CSVLogger(history_csv)], verbose=2)
        model.save(head_ckpt)


def _fine_tune(model, args: argparse.Namespace, train_ds, val_ds, *, class_weight: dict | None, n_train: int, out: Path,
               history_csv: Path):
    """Phase 2: the whole network, cosine-decayed --lr, best.keras kept by --select, backup/ for --resume; the History."""
    import keras

    from .model import set_backbone_trainable

    print(f"phase 2: fine-tune backbone (BatchNorm {args.bn}), {args.epochs} epoch(s)", flush=True)
    set_backbone_trainable(model, True, bn=args.bn)
    steps = args.epochs * int(np.ceil(n_train / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=max(steps, 1), alpha=0.01)
    model.compile(keras.optimizers.Adam(schedule), _loss(), metrics=["accuracy"])
    callbacks = [
        keras.callbacks.CSVLogger(history_csv, append=True),
        keras.callbacks.ModelCheckpoint(out / "best.keras", monitor=args.select, save_best_only=True),
        keras.callbacks.BackupAndRestore(str(out / "backup")),
    ]
    return model.fit(train_ds, validation_data=val_ds, epochs=args.epochs, class_weight=class_weight, callbacks=callbacks,
                     verbose=2)


def check_batch_norm(model, train: Split, spec: InputSpec, *, fit_accuracy: float | None) -> dict:
    """Batch-norm sanity check: evaluate() on un-augmented training images (a compiled ``model``) must roughly agree
    with the last training epoch's accuracy (the Keras 3 BN trap makes them diverge). Printed, and returned for
    train_summary.json."""
    sample = make_dataset(train, spec, batch_size=128, training=False)
    _, train_eval_acc = model.evaluate(sample.take(16), verbose=0)
    print(f"BN check: evaluate() on training images {train_eval_acc:.4f} vs fit() {fit_accuracy}", flush=True)
    return {"evaluate_on_train": float(train_eval_acc), "fit_reported": fit_accuracy}


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
