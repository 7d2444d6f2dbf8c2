"""Fine-tune a trained model so that its CAM falls on the white cell (CAM supervision).

    python -m training.cam_supervised --init-model models/wbc-crosslab.keras --data ../shared/data/pbc \\
        --decode-size 160 --augment crosslab --colour-pool runs/colour_pool.npz \\
        --epochs 4 --lr 1e-4 --cam-weight 1.0 --out runs/wbc-cam

The loss adds to the class-weighted cross-entropy the share of the true class's
CAM that lies outside the cell:

    CAM_y(i, j) = ReLU(sum_k w_ky A_k(i, j))           (the map the core draws, hematovision/cam.py)
    outside     = sum_ij CAM_y(i, j) (1 - M(i, j)) / (sum_ij CAM_y(i, j) + eps)
    loss        = CE + cam_weight * outside

With ``--teacher`` (knowledge distillation, Hinton et al. 2015) the CE term becomes

    (1 - a) CE + a T^2 KL(softmax(t / T) || softmax(z / T)),   t = mean of the teacher's logits over two mirror views

so the student keeps the teacher's decisions (and its test-time-view average) while
its CAM is pulled onto the cell; T^2 keeps the gradient scale of the soft term.

``A`` is the last feature map, ``w`` the dense head, ``M`` the core's
segmentation of the central white cell (``morphology.segment``) pooled to the
feature grid as an area fraction. The mask is computed once per training image
and goes through the same geometric augmentation as the image (a 4th channel),
so flips, rotations and zooms move it with the cell; the colour and optics
transforms apply to the image only. Images where no cell is segmented get no
penalty. This is "right for the right reasons" (Ross et al. 2017) with the CAM
as the explanation. Selection: PBC val accuracy (the CAM share on val is
logged beside it). The run folder has the files ``export.tflite --run`` reads.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import json
import time
from pathlib import Path

import numpy as np

from hematovision.commands import finite_float

from .data import FACTS, Split, class_weights, load_labelled_folder, load_split


def cell_masks(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 -> (N, H, W, 1) uint8 masks {0, 255} of the central cell, and a has-cell flag per image."""
    from .cam_localisation import central_cell_mask

    masks = np.zeros(images.shape[:3] + (1,), np.uint8)
    found = np.zeros(len(images), bool)
    for i, image in enumerate(images):
        mask = central_cell_mask(image)
        if mask is not None:
            masks[i, ..., 0] = mask.astype(np.uint8) * 255
            found[i] = True
    return masks, found


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.cam_supervised", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init-model", required=True, help="a trained .keras model (GAP -> dense head) to start from")
    p.add_argument("--dataset", choices=sorted(FACTS), default="pbc")
    p.add_argument("--data", required=True, help="folder with splits.csv and images/")
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--decode-size", type=int, default=160, help="training images are decoded at this size, augmented, then resized")
    p.add_argument("--augment", choices=("basic", "lab", "crosslab"), default="crosslab",
                   help="the augmentation level the init model was trained with (training.augment)")
    p.add_argument("--output-stride", type=int, choices=(16, 32),
                   help="rebuild the init model at this output stride first (16: an 8x8 CAM at 128 px; the weights "
                        "carry over one to one); default: keep the init model's")
    p.add_argument("--colour-pool", help="npz from python -m training.colour_pool (crosslab colour transfer)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (cosine decay)")
    p.add_argument("--cam-weight", type=float, default=1.0, help="weight of the CAM-outside-the-cell term")
    p.add_argument("--teacher", help="a trained .keras model to distil from (its logits averaged over the left-right and "
                   "up-down mirror images, the shipped flips2 views); default: none, cross-entropy only")
    p.add_argument("--kd-weight", type=float, default=0.5, help="with --teacher: share of the distillation term (default: %(default)s)")
    p.add_argument("--kd-temperature", type=float, default=2.0, help="with --teacher: softening temperature (default: %(default)s)")
    p.add_argument("--min-cam-inside", type=float, default=0.0,
                   help="epochs whose val CAM mass inside the cell is below this are kept only if none reaches it (default: %(default)s)")
    p.add_argument("--extra-labelled", nargs="+", default=[], metavar="DIR",
                   help="other labs' labelled cells (<label>/<image> folders) added to the training split, each repeated "
                        "to about --extra-share of it; their CAM masks come from the same segmentation")
    p.add_argument("--extra-share", type=float, default=0.1,
                   help="with --extra-labelled: each folder's copies per epoch as a share of the PBC train split (default: %(default)s)")
    p.add_argument("--mixstyle", type=finite_float(0, 1), default=0.0, metavar="P",
                   help="MixStyle feature-statistics mixing (training/mixstyle.py) with probability P per batch after "
                        "the backbone layers --mixstyle-after; 0 (default) turns it off. The saved model is the plain network")
    p.add_argument("--grayscale", type=finite_float(0, 1), default=0.0, metavar="P",
                   help="after the --augment appearance, make a sample grey with probability P (training.augment."
                        "random_grayscale); 0 (default) turns it off")
    p.add_argument("--amplitude-pool", metavar="NPZ",
                   help="npz from python -m training.amplitude_pool (other labs' Fourier amplitude spectra at --img-size)")
    p.add_argument("--amplitude-mix", type=finite_float(0, 1), default=0.0, metavar="P",
                   help="before the --augment appearance, mix a sample's Fourier amplitude towards a pool image's with "
                        "probability P (training.augment.amplitude_mix); 0 (default) turns it off; needs --amplitude-pool")
    p.add_argument("--mixstyle-after", nargs="+", default=None, metavar="LAYER",
                   help="backbone layers MixStyle follows (default: block_2_add block_5_add)")
    p.add_argument("--consistency", type=finite_float(0, 1000), default=0.0, metavar="W",
                   help="weight of a Jensen-Shannon consistency term between two appearance-augmented views of each cell "
                        "(training/consistency.py, AugMix); 0 (default) turns it off; on, each step sees both views")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-per-class", type=int, help="only N images per class and split (smoke tests)")
    p.add_argument("--out", required=True, help="run folder")
    args = p.parse_args(argv)
    if args.amplitude_mix > 0 and not args.amplitude_pool:
        p.error("--amplitude-mix needs --amplitude-pool NPZ (make one with python -m training.amplitude_pool)")
    return args


def _pipeline(images, masks, labels, spec, *, batch_size, augment_geometry, appearance, out_size, training, seed,
              views: int = 1):
    """Batches of (x, mask, label); with ``views=2`` (training only), (x1, x2, mask, label): one geometry, two
    independent appearance draws (training/consistency.py)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((np.concatenate([images, masks], axis=-1), labels))
    if training:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)  # the whole split, every epoch

    def network_input(x):
        return x * (255.0 * spec.scale) + spec.offset

    def to_input(xm, y):
        xm = tf.cast(xm, tf.float32) / 255.0
        if training:
            xm = augment_geometry(xm)
        if xm.shape[1] != out_size:
            xm = tf.image.resize(xm, (out_size, out_size), antialias=True)
        x, m = xm[..., :3], xm[..., 3:]
        if training and views == 2:
            return network_input(appearance(x)), network_input(appearance(x)), m, y
        if training:
            x = appearance(x)
        return network_input(x), m, y

    return ds.batch(batch_size).map(to_input, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _outside_share(feats, kernel, y, masks):
    """Per-sample share of the true class's CAM mass outside the (pooled) cell mask."""
    import tensorflow as tf

    w = tf.transpose(tf.gather(kernel, y, axis=1))  # (B, K)
    cam = tf.nn.relu(tf.einsum("bhwk,bk->bhw", feats, w))
    m = tf.image.resize(masks, tf.shape(feats)[1:3], method="area")[..., 0]
    total = tf.reduce_sum(cam, axis=[1, 2])
    return tf.reduce_sum(cam * (1.0 - m), axis=[1, 2]) / (total + 1e-6)


def _load(args):
    """Decode the splits (training images at ``--decode-size``) and segment the cells of train and val."""
    labels = FACTS[args.dataset].labels
    t0 = time.time()
    splits = {s: load_split(args.data, s, args.img_size, labels, limit=args.limit_per_class) for s in ("train", "val", "test")}
    train = load_split(args.data, "train", args.decode_size, labels, limit=args.limit_per_class)
    train, extras = _with_extra_labelled(train, getattr(args, "extra_labelled", []), getattr(args, "extra_share", 0.1),
                                         args.decode_size, labels)
    masks = {"train": cell_masks(train.images), "val": cell_masks(splits["val"].images)}
    print(f"decoded and segmented in {time.time() - t0:.0f}s; cell found in {masks['train'][1].mean():.3f} of train, "
          f"{masks['val'][1].mean():.3f} of val", flush=True)
    # No cell found: a mask covering everything, i.e. no penalty.
    masks = {k: np.where(found[:, None, None, None], m, 255).astype(np.uint8) for k, (m, found) in masks.items()}
    return labels, splits, train, masks, extras


def _with_extra_labelled(train: Split, folders, share: float, size: int, labels) -> tuple[Split, list[dict]]:
    """``train`` plus each folder's cells repeated ``round(share * len(train) / n)`` times (at least once).

    Multi-source training: a few hundred cells of another microscope, repeated so that they are about ``share``
    of an epoch, each copy augmented afresh. Returns the merged split and what was added (for config.json).
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"--extra-share must be in (0, 1], not {share}")
    parts, extras = [train], []
    for folder in folders:
        cells = load_labelled_folder(folder, size, labels)
        copies = max(1, round(share * len(train.labels) / len(cells.labels)))
        parts.append(Split(cells.paths * copies, np.concatenate([cells.images] * copies),
                           np.concatenate([cells.labels] * copies)))
        extras.append({"folder": str(folder), "cells": len(cells.labels), "copies": copies,
                       "counts": {labels[i]: int(c) for i, c in enumerate(np.bincount(cells.labels, minlength=len(labels))) if c}})
        print(f"extra labelled: {folder}: {len(cells.labels)} cells x {copies}", flush=True)
    if not extras:
        return train, []
    return Split(sum((p.paths for p in parts), ()), np.concatenate([p.images for p in parts]),
                 np.concatenate([p.labels for p in parts])), extras


def _augmenters(args, config: dict):
    """(geometry on image + mask, appearance on the image only) for ``--augment``: ``--amplitude-mix`` before the
    level's appearance, ``--grayscale`` after it; records the colour and amplitude pools in ``config``."""
    geometry, appearance = _level_augmenters(args, config)
    mix = _amplitude_mixer(args, config)
    if mix is not None:
        level_appearance = appearance
        appearance = lambda x: level_appearance(mix(x))  # noqa: E731
    p = getattr(args, "grayscale", 0.0)
    if p > 0:
        from .augment import random_grayscale

        return geometry, (lambda x: random_grayscale(appearance(x), p))
    return geometry, appearance


def _amplitude_mixer(args, config: dict):
    """``--amplitude-mix P`` with ``--amplitude-pool``: the batched amplitude mix (None when off); records the pool."""
    p = getattr(args, "amplitude_mix", 0.0)
    if not p:
        return None
    import tensorflow as tf

    from .augment import amplitude_mix

    with np.load(args.amplitude_pool) as saved:
        size, spectra, sources = int(saved["size"]), saved["amplitude"], [str(x) for x in saved["sources"]]
    if size != args.img_size:
        raise ValueError(f"{args.amplitude_pool} holds spectra at {size} px but --img-size is {args.img_size}; "
                         f"rebuild it with python -m training.amplitude_pool --size {args.img_size}")
    pool = tf.constant(spectra, tf.float32)
    config["amplitude_pool"] = {"file": args.amplitude_pool, "images": int(len(spectra)), "sources": sources, "p": p}
    return lambda x: amplitude_mix(x, pool, p)


def _level_augmenters(args, config: dict):
    import tensorflow as tf

    from .augment import colour, crosslab_appearance, dihedral, lab_appearance, wide_zoom_shift, zoom_shift

    if args.augment == "basic":
        return (lambda xm: zoom_shift(dihedral(xm))), colour
    if args.augment == "lab":
        return (lambda xm: zoom_shift(dihedral(xm))), lab_appearance
    pool = None
    if args.colour_pool:
        with np.load(args.colour_pool) as saved:
            pool = tf.constant(saved["stats"], tf.float32)
            config["colour_pool"] = {"file": args.colour_pool, "images": int(len(saved["stats"])),
                                     "sources": [str(x) for x in saved["sources"]]}
    return (lambda xm: wide_zoom_shift(dihedral(xm))), (lambda x: crosslab_appearance(x, pool))


def _init_model(args, num_classes: int):
    """--init-model, rebuilt at --output-stride when asked (same kernels, so its weights load one to one)."""
    import keras

    from .model import backbone, build_model

    model = keras.models.load_model(args.init_model)
    stride = args.img_size // int(backbone(model).output.shape[1])
    if args.output_stride is None or args.output_stride == stride:
        return model
    rebuilt = build_model(num_classes, img_size=args.img_size, dropout=model.get_layer("dropout").rate,
                          output_stride=args.output_stride)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


@dataclass(frozen=True)
class Trainable:
    """What a CAM-supervised train step needs: the two-output model, the head kernel, the optimiser, the loss."""

    two: object  # keras model: image -> (logits, last feature map)
    kernel: object  # the logits layer's kernel (D, C): the CAM weights
    optimizer: object  # Adam, cosine decay over all the run's steps
    class_weights: object  # (C,) tf constant

    def weighted_ce(self, y, logits):
        """Class-weighted mean cross-entropy."""
        import tensorflow as tf

        w = tf.gather(self.class_weights, y)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y, tf.int32), logits)
        return tf.reduce_sum(ce * w) / tf.reduce_sum(w)


def trainable(model, args, weights, n_train: int) -> Trainable:
    """The whole network trainable (batch-norm momentum kept, training-notes.md), with a feature output."""
    import keras
    import tensorflow as tf

    from .model import LOGITS_NAME, set_backbone_trainable, with_feature_output

    set_backbone_trainable(model, True, bn="momentum")
    steps = args.epochs * int(np.ceil(n_train / args.batch_size))
    opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=max(steps, 1), alpha=0.01))
    return Trainable(with_feature_output(model), model.get_layer(LOGITS_NAME).kernel, opt,
                     tf.constant([weights[i] for i in range(len(weights))], tf.float32))


def val_step_of(t: Trainable):
    """Compiled validation step: (correct count, summed CAM share outside the cell, for the predicted class)."""
    import tensorflow as tf

    @tf.function
    def val_step(x, m, y):
        logits, feats = t.two(x, training=False)
        pred = tf.argmax(logits, 1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(pred == tf.cast(y, tf.int32), tf.float32))
        return correct, tf.reduce_sum(_outside_share(feats, t.kernel, pred, m))

    return val_step


def _steps(model, args, weights, n_train: int):
    """The compiled train and validation steps (CE + cam_weight * outside share)."""
    import tensorflow as tf

    t = trainable(model, args, weights, n_train)
    if args.consistency > 0:
        from .consistency import two_view_step

        if args.teacher:
            raise SystemExit("error: --consistency and --teacher together are not implemented; use one of them")
        return two_view_step(t, weight=args.consistency, cam_weight=args.cam_weight, outside_share=_outside_share), val_step_of(t)
    two, kernel, opt = t.two, t.kernel, t.optimizer
    soft = _distillation(args)

    @tf.function
    def train_step(x, m, y):
        with tf.GradientTape() as tape:
            logits, feats = two(x, training=True)
            loss_ce = t.weighted_ce(y, logits)
            if soft is not None:
                loss_ce = (1.0 - args.kd_weight) * loss_ce + args.kd_weight * soft(x, logits)
            outside = tf.reduce_mean(_outside_share(feats, kernel, y, m))
            loss = loss_ce + args.cam_weight * outside
        grads = tape.gradient(loss, two.trainable_variables)
        opt.apply_gradients(zip(grads, two.trainable_variables))
        correct = tf.cast(tf.argmax(logits, 1, output_type=tf.int32) == tf.cast(y, tf.int32), tf.float32)
        return loss_ce, outside, tf.reduce_mean(correct)

    return train_step, val_step_of(t)


def _distillation(args):
    """``soft(x, student_logits)``: T^2 KL(teacher || student) at temperature T, or None without ``--teacher``."""
    if not args.teacher:
        return None
    import keras
    import tensorflow as tf

    teacher = keras.models.load_model(args.teacher)
    teacher.trainable = False
    t = float(args.kd_temperature)

    def soft(x, logits):
        # The teacher as shipped: logits averaged over the left-right and up-down mirror images (tta flips2).
        z_t = 0.5 * (teacher(tf.reverse(x, [2]), training=False) + teacher(tf.reverse(x, [1]), training=False))
        p_t = tf.nn.softmax(z_t / t)
        log_p_s = tf.nn.log_softmax(logits / t)
        kl = tf.reduce_sum(p_t * (tf.math.log(p_t + 1e-8) - log_p_s), axis=1)
        return t * t * tf.reduce_mean(kl)

    return soft


def _validate(val_step, val_ds, n: int) -> tuple[float, float]:
    """(val accuracy, mean CAM share inside the cell for the predicted class)."""
    correct = outside = 0.0
    for x, m, y in val_ds:
        c, o = val_step(x, m, y)
        correct, outside = correct + float(c), outside + float(o)
    return correct / n, 1.0 - outside / n


TRAIN_METRICS = ("loss_ce", "train_outside", "accuracy")  # what _steps' train_step returns, in order


def _fit(model, args, out: Path, epoch_batches, val_ds, n_val: int, train_step, val_step, *,
         metrics: tuple[str, ...] = TRAIN_METRICS, min_cam_inside: float = 0.0, save=None) -> tuple[list, tuple]:
    """Epoch loop; keeps best.keras by (val CAM inside >= min_cam_inside, val accuracy, val CAM inside).

    ``epoch_batches()``: one epoch of train_step's argument tuples; train_step returns ``metrics`` (averaged per epoch).
    ``save(path)`` writes the model (default ``model.save``; with MixStyle, the plain network with the trained weights).
    """
    save = save or model.save
    acc0, inside0 = _validate(val_step, val_ds, n_val)
    history, best, t_train = [{"epoch": 0, "val_accuracy": acc0, "val_cam_inside": inside0}], None, time.time()
    print(f"start: val accuracy {acc0:.4f}, val CAM mass inside the cell {inside0:.3f}", flush=True)
    for epoch in range(1, args.epochs + 1):
        sums, n = np.zeros(len(metrics)), 0
        for batch in epoch_batches():
            sums, n = sums + np.array([float(v) for v in train_step(*batch)]), n + 1
        acc, inside = _validate(val_step, val_ds, n_val)
        row = {"epoch": epoch, **{name: v / n for name, v in zip(metrics, sums)},
               "val_accuracy": acc, "val_cam_inside": inside, "seconds": round(time.time() - t_train, 1)}
        if best is None or (inside >= min_cam_inside, acc, inside) > (best[1] >= min_cam_inside, *best):
            best, row["saved"] = (acc, inside), True
            save(out / "best.keras")
        history.append(row)
        print(json.dumps(row), flush=True)
        (out / "history.json").write_text(json.dumps(history, indent=2))
    save(out / "last.keras")
    return history, best


def _finish(out: Path, splits, spec, history, best, seconds: float, *, min_cam_inside: float) -> None:
    """BN check, summary, backbone weights and the float evaluation of best.keras (the files export.tflite reads)."""
    import keras

    from . import evaluate
    from .model import backbone
    from .train import check_batch_norm

    model = keras.models.load_model(out / "best.keras")
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    summary = {"train_seconds": round(seconds, 1),
               "bn_check": check_batch_norm(model, splits["train"], spec, fit_accuracy=history[-1].get("accuracy")),
               "best_val_accuracy": best[0], "best_val_cam_inside": best[1], "start": history[0],
               "select": f"val CAM inside >= {min_cam_inside}, then val_accuracy, then CAM inside"}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    backbone(model).save_weights(out / "backbone.weights.h5")
    evaluate.evaluate_run(out, model=model, splits=splits)


@dataclass(frozen=True)
class RunSetup:
    """A fine-tuning run ready to train: data, the init model, its config (not yet written) and the pipelines."""

    out: Path
    splits: dict
    train: object  # the train split (images, labels)
    spec: object  # InputSpec
    weights: dict  # class weights
    model: object  # keras model from --init-model (rebuilt at --output-stride if asked; with --mixstyle, with MixStyle)
    config: dict  # run_config: what export.tflite and the card read
    geometry: object
    appearance: object
    train_ds: object
    val_ds: object
    save: object = None  # save(path): what _fit writes (None: model.save)


def setup_run(args, argv, *, program: str, extra_args: dict | None = None) -> RunSetup:
    """Seed, load and segment PBC, load the init model, build the config and the PBC train and val pipelines.

    Shared by this module and ``training.self_training``; ``args.output_stride`` is set to what the model has.
    """
    import keras

    from hematovision.registry import sha256_file
    from hematovision.spec import InputSpec

    from .model import backbone
    from .train import run_config

    keras.utils.set_random_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels, splits, train, masks, extras = _load(args)
    spec = InputSpec(height=args.img_size, width=args.img_size)
    weights = class_weights(train.labels, len(labels))
    model = _init_model(args, len(labels))
    args.output_stride = args.img_size // int(backbone(model).output.shape[1])  # what was trained, rebuilt or not
    init_args = {"alpha": 0.35, "dropout": model.get_layer("dropout").rate, "weights": args.init_model,
                 "init_model_sha256": sha256_file(args.init_model), "extra_labelled_cells": extras, **(extra_args or {})}
    config = run_config(args, argv, spec=spec, train_labels=train.labels, weights=weights, program=program,
                        extra_args=init_args)
    geometry, appearance = _augmenters(args, config)
    train_ds = _pipeline(train.images, masks["train"], train.labels, spec, batch_size=args.batch_size, augment_geometry=geometry,
                         appearance=appearance, out_size=args.img_size, training=True, seed=args.seed,
                         views=2 if getattr(args, "consistency", 0.0) > 0 else 1)
    val_ds = _pipeline(splits["val"].images, masks["val"], splits["val"].labels, spec, batch_size=128, augment_geometry=None,
                       appearance=None, out_size=args.img_size, training=False, seed=args.seed)
    save = None
    if getattr(args, "mixstyle", 0.0) > 0:
        from . import mixstyle

        plain = model
        try:
            model = mixstyle.with_mixstyle(plain, p=args.mixstyle, after=tuple(args.mixstyle_after or mixstyle.DEFAULT_AFTER))
        except ValueError as exc:  # a --mixstyle-after name the backbone does not have
            raise SystemExit(f"error: --mixstyle-after: {exc}; names are MobileNetV2 layer names such as "
                             f"{', '.join(mixstyle.DEFAULT_AFTER)}") from None
        save = lambda path: mixstyle.strip(model, plain).save(path)  # noqa: E731 - the plain network, trained weights
    return RunSetup(out, splits, train, spec, weights, model, config, geometry, appearance, train_ds, val_ds, save)


def main(argv=None) -> int:
    args = parse_args(argv)
    from hematovision.registry import sha256_file

    t0 = time.time()
    run = setup_run(args, argv, program="training.cam_supervised",
                    extra_args={"teacher_sha256": sha256_file(args.teacher) if args.teacher else None})
    (run.out / "config.json").write_text(json.dumps(run.config, indent=2))
    train_step, val_step = _steps(run.model, args, run.weights, len(run.train.labels))
    t_train = time.time()
    metrics = TRAIN_METRICS + (("js",) if args.consistency > 0 else ())
    history, best = _fit(run.model, args, run.out, lambda: run.train_ds, run.val_ds, len(run.splits["val"].labels),
                         train_step, val_step, metrics=metrics, min_cam_inside=args.min_cam_inside, save=run.save)
    _finish(run.out, run.splits, run.spec, history, best, time.time() - t_train, min_cam_inside=args.min_cam_inside)
    print(f"done in {time.time() - t0:.0f}s -> {run.out}", flush=True)
    return 0


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
