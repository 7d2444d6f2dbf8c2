"""Self-training on other labs' unlabelled cells (FixMatch), on top of CAM-supervised fine-tuning.

    python -m training.self_training halves --cells ../shared/data/otherlabs/zheng1 ../shared/data/otherlabs/zheng2 --out runs/halves
    python -m training.self_training train --init-model models/wbc-crosslab.keras --data ../shared/data/pbc \\
        --colour-pool runs/colour_pool.npz --unlabelled runs/halves/zheng1_unlabelled runs/halves/zheng2_unlabelled \\
        --bccd ../shared/data/bccd --epochs 3 --out runs/wbc-selftrain

``halves`` splits each labelled other-lab folder in two by a hash of each file name: ``NAME_unlabelled/`` (its
labels are never read by training) and ``NAME_eval/`` (never seen by training, labels used only to report). This is the
setting of a lab that has many unlabelled cells from its own microscope and checks on other cells.

``train`` adds to each PBC step (cross-entropy + CAM term, ``training.cam_supervised``) a batch of unlabelled
other-lab cells. FixMatch (Sohn et al. 2020): the model's own prediction on a weak view (a dihedral symmetry)
is the target for a strong view (the ``crosslab`` geometry and appearance transforms), where that prediction
is confident:

    q = softmax(z(weak));  mask = max(q) >= tau;  L_u = mean(mask * CE(argmax q, z(strong)))
    loss = CE_pbc + cam_weight * outside + lambda_u * L_u

``--flexible``: one fixed tau lets the classes the teacher is already sure of (on zheng1: neutrophil) take every
pseudo-label and the others collapse into them. FlexMatch (Zhang et al. 2021) lowers tau per class by how well the
class is learnt on the unlabelled cells: s_c = share of unlabelled cells predicted c with max(q) >= tau (a running
average, started from one pass of the init model), s_0 = share below tau, sigma_c = s_c / max(max_c s_c, s_0),
tau_c = tau * sigma_c / (2 - sigma_c) (the convex map of the paper); a cell counts where max(q) >= tau_{argmax q}.

The labelled and strong unlabelled views go through the network as one batch, so batch-norm statistics see
both domains. Selection: PBC val accuracy only (as in ``cam_supervised``); the run folder is what
``python -m export.tflite --run`` reads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from . import cam_supervised as cs


def half_of(name: str) -> str:
    """'unlabelled' or 'eval', fixed by the sha256 of the file name (stable across machines and orderings)."""
    return "unlabelled" if hashlib.sha256(name.encode()).digest()[0] % 2 == 0 else "eval"


def write_halves(cells_dir: str | Path, out: str | Path) -> dict[str, int]:
    """Symlink each image of ``cells_dir/<label>/`` into ``out/NAME_unlabelled/<label>/`` or ``out/NAME_eval/<label>/``
    (NAME: the folder's name, so reports keep the lab apart); counts per half."""
    from .crosslab import labelled_cells

    counts = {"unlabelled": 0, "eval": 0}
    for path, label in labelled_cells(cells_dir):
        half = half_of(path.name)
        target = Path(out) / f"{Path(cells_dir).name}_{half}" / label / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.symlink(path.resolve(), target)
        counts[half] += 1
    return counts


def unlabelled_images(folders, bccd: str | None, size: int) -> tuple[np.ndarray, list[str]]:
    """Every image under ``folders`` (any depth; labels ignored) and the BCCD white-cell crops, resized to size."""
    from hematovision.images import load_image
    from hematovision.preprocessing import resize

    from .crosslab import IMAGE_SUFFIXES
    from .robustness import bccd_crops

    paths = sorted(p for f in folders for p in Path(f).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    images = [resize(load_image(p), size, size) for p in paths]
    sources = [str(p) for p in paths]
    if bccd:
        crops = bccd_crops(bccd)
        images += [resize(im, size, size) for _, im in crops]
        sources += [f"bccd:{name}" for name, _ in crops]
    if not images:
        raise FileNotFoundError(f"no unlabelled images under {list(folders)} (or --bccd {bccd})")
    return np.stack(images), sources


def _unlabelled_pipeline(images, spec, *, batch_size, geometry, appearance, out_size, seed):
    """Endless (weak, strong) view pairs of the unlabelled images."""
    import tensorflow as tf

    from .augment import dihedral

    def views(x):
        x = tf.cast(x, tf.float32) / 255.0
        weak = tf.image.resize(dihedral(x), (out_size, out_size), antialias=True)
        strong = tf.image.resize(geometry(x), (out_size, out_size), antialias=True)
        strong = appearance(strong)
        scale = lambda v: v * (255.0 * spec.scale) + spec.offset  # noqa: E731
        return scale(weak), scale(strong)

    ds = tf.data.Dataset.from_tensor_slices(images).shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return ds.repeat().batch(batch_size).map(views, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def class_thresholds(status, tau: float):
    """FlexMatch's per-class thresholds from the learning status (see the module docstring).

    status: (C + 1,) shares of unlabelled cells, [confidently predicted class 0..C-1, not confident].
    """
    import tensorflow as tf

    status = tf.convert_to_tensor(status, tf.float32)
    sigma = status[:-1] / tf.maximum(tf.reduce_max(status), 1e-12)
    return tau * sigma / (2.0 - sigma)


def learning_status(probs, tau: float):
    """(C + 1,) shares of a batch of softmax outputs: confident (max >= tau) per argmax class, then not confident."""
    import tensorflow as tf

    probs = tf.convert_to_tensor(probs, tf.float32)
    confident = tf.cast(tf.reduce_max(probs, 1) >= tau, tf.float32)
    per_class = tf.reduce_mean(tf.one_hot(tf.argmax(probs, 1), probs.shape[1]) * confident[:, None], 0)
    return tf.concat([per_class, [1.0 - tf.reduce_sum(per_class)]], 0)


def _steps(model, args, weights, n_train: int, status0=None):
    """Train step (CE + CAM term on PBC, FixMatch term on the unlabelled batch) and cam_supervised's val step."""
    import tensorflow as tf

    t = cs.trainable(model, args, weights, n_train)
    status = tf.Variable(status0 if status0 is not None else np.zeros(len(weights) + 1), dtype=tf.float32)

    @tf.function
    def train_step(x, m, y, weak, strong):
        q = tf.nn.softmax(t.two(weak, training=False)[0])  # the pseudo-label: no gradient, inference-mode BN
        pseudo, tau = tf.argmax(q, 1), tf.fill([len(weights)], args.threshold)
        if args.flexible:  # per-class thresholds, then the running status (momentum 0.99)
            tau = class_thresholds(status, args.threshold)
            status.assign(0.99 * status + 0.01 * learning_status(q, args.threshold))
        keep = tf.cast(tf.reduce_max(q, 1) >= tf.gather(tau, pseudo), tf.float32)
        n = tf.shape(x)[0]
        with tf.GradientTape() as tape:
            logits, feats = t.two(tf.concat([x, strong], 0), training=True)
            lab, unl = logits[:n], logits[n:]
            loss_ce = t.weighted_ce(y, lab)
            outside = tf.reduce_mean(cs._outside_share(feats[:n], t.kernel, y, m))
            loss_u = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(pseudo, tf.int32), unl) * keep)
            loss = loss_ce + args.cam_weight * outside + args.unlabelled_weight * loss_u
        grads = tape.gradient(loss, t.two.trainable_variables)
        t.optimizer.apply_gradients(zip(grads, t.two.trainable_variables))
        correct = tf.cast(tf.argmax(lab, 1, output_type=tf.int32) == tf.cast(y, tf.int32), tf.float32)
        return loss_ce, outside, tf.reduce_mean(correct), loss_u, tf.reduce_mean(keep)

    return train_step, cs.val_step_of(t)


def _initial_status(model, unl_ds, n: int, args):
    """The init model's learning status on (about) one pass of weak views of the unlabelled cells."""
    import tensorflow as tf

    probs = []
    for weak, _ in unl_ds.take(int(np.ceil(n / args.unlabelled_batch))):
        probs.append(tf.nn.softmax(model(weak, training=False)).numpy())
    status = learning_status(np.concatenate(probs), args.threshold).numpy()
    print("initial learning status (per class, then not confident):", np.round(status, 3).tolist(), flush=True)
    return status


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.self_training", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    h = sub.add_parser("halves", help="split a labelled other-lab folder into unlabelled/ and eval/ halves")
    h.add_argument("--cells", nargs="+", required=True, help="DIR/<label>/<image> (or DIR/images/<label>/<image>)")
    h.add_argument("--out", required=True)
    t = sub.add_parser("train", help="FixMatch fine-tuning (see above)")
    t.add_argument("--init-model", required=True, help="a trained .keras model (GAP -> dense head) to start from")
    t.add_argument("--data", required=True, help="PBC folder with splits.csv and images/")
    t.add_argument("--unlabelled", nargs="+", required=True, help="folders of unlabelled other-lab cell images")
    t.add_argument("--bccd", help="BCCD folder (boxes.csv, images/): its white-cell crops are added unlabelled")
    t.add_argument("--colour-pool", help="npz from python -m training.colour_pool")
    t.add_argument("--threshold", type=float, default=0.9, help="pseudo-label confidence threshold tau (default: %(default)s)")
    t.add_argument("--flexible", action="store_true", help="FlexMatch per-class thresholds (see above)")
    t.add_argument("--unlabelled-weight", type=float, default=1.0, help="lambda_u (default: %(default)s)")
    t.add_argument("--unlabelled-batch", type=int, default=32)
    t.add_argument("--cam-weight", type=float, default=1.0)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--img-size", type=int, default=128)
    t.add_argument("--decode-size", type=int, default=160)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit-per-class", type=int, help="only N PBC images per class and split (smoke tests)")
    t.add_argument("--out", required=True, help="run folder")
    args = p.parse_args(argv)
    if args.command == "train":  # what cam_supervised's helpers read
        args.dataset, args.augment, args.output_stride, args.teacher = "pbc", "crosslab", None, None
    return args


def train(args, argv) -> int:
    t0 = time.time()
    unl, sources = unlabelled_images(args.unlabelled, args.bccd, args.decode_size)
    print(f"{len(unl)} unlabelled images", flush=True)
    run = cs.setup_run(args, argv, program="training.self_training", extra_args={"unlabelled_images": len(unl)})
    (run.out / "unlabelled_sources.txt").write_text("\n".join(sources) + "\n")
    unl_ds = _unlabelled_pipeline(unl, run.spec, batch_size=args.unlabelled_batch, geometry=run.geometry,
                                  appearance=run.appearance, out_size=args.img_size, seed=args.seed)
    status0 = _initial_status(run.model, unl_ds, len(unl), args) if args.flexible else None
    if status0 is not None:
        run.config["initial_learning_status"] = [round(float(v), 4) for v in status0]
    (run.out / "config.json").write_text(json.dumps(run.config, indent=2))
    train_step, val_step = _steps(run.model, args, run.weights, len(run.train.labels), status0)
    t_train = time.time()
    unl_batches = iter(unl_ds)  # endless: the unlabelled cells cycle across PBC epochs
    history, best = cs._fit(run.model, args, run.out, lambda: ((x, m, y, *next(unl_batches)) for x, m, y in run.train_ds),
                            run.val_ds, len(run.splits["val"].labels), train_step, val_step,
                            metrics=(*cs.TRAIN_METRICS, "loss_unlabelled", "pseudo_labelled_share"))
    cs._finish(run.out, run.splits, run.spec, history, best, time.time() - t_train, min_cam_inside=0.0)
    print(f"done in {time.time() - t0:.0f}s -> {run.out}", flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.command == "halves":
        for cells in args.cells:
            print(Path(cells).name, json.dumps(write_halves(cells, args.out)))
        return 0
    return train(args, argv)


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
