"""Adapt a trained model to a new microscope without labels, then export it.

    python -m export.adapt --source-model models/wbc.json --source-data ../shared/data/pbc \
        --target ../shared/data/bccd --name wbc-bccd --out models

``--target`` is a folder of unlabelled images from the new set-up: single-cell
crops, or whole fields with a ``boxes.csv`` (image,cell_type,xmin,ymin,xmax,ymax;
WBC rows are cropped with PBC-like framing).

Method: batch-norm statistics alignment (AdaBN, Li et al. 2016, adapted to a
network whose BN layers were frozen). A frozen BN layer computes
y = g (x - m) / S + b with fixed m, S. We want target activations first mapped
onto the source (PBC) activation statistics, x' = (x - mu_t) s_s / s_t + mu_s;
substituting gives the same layer with
    m' = mu_t - (mu_s - m) s_t / s_s,     S' = S s_t / s_s.
Layers are adapted in order, each measured through the already adapted ones.
Only BN statistics change; no weight is trained and no label is used.

The exported model keeps the source model's calibration and OOD reference
(the alignment maps target features onto the source distribution they were
fitted on) and records what it was adapted to. Before/after, it reports the
share of target images flagged uncertain.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from hematovision.images import load_image
from hematovision.preprocessing import resize
from hematovision.spec import InputSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}


def target_images(folder: str | Path, size: int) -> list[np.ndarray]:
    folder = Path(folder)
    if (folder / "boxes.csv").exists():
        from training.robustness import bccd_crops

        return [resize(img, size, size) for _, img in bccd_crops(folder)]
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{folder}: no images (jpg, png, tif, bmp) found to adapt to")
    return [resize(load_image(p), size, size) for p in files]


#: The int8 export of an aligned model must give the float model's answer on at least this share of the target.
MIN_INT8_AGREEMENT = 0.9


def _channel_stats(probe, x: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of ``probe``'s output over every image and position."""
    acts = probe.predict(x, batch_size=batch, verbose=0)
    flat = acts.reshape(-1, acts.shape[-1]).astype(np.float64)
    return flat.mean(0), flat.std(0) + 1e-6


def align_batchnorm(model, source: np.ndarray, target: np.ndarray, *, batch: int = 128) -> int:
    """Re-centre every BatchNormalization layer of ``model`` (in place). Returns the number adapted.

    mu_s, s_s are measured once, through the network as trained: they are what each frozen layer's m and S
    were fitted to. mu_t, s_t are measured layer by layer through the layers already adapted. (Measuring the
    source again through the adapted layers, as this function did until 2026-12-07, maps the target onto a
    reference that drifts with every layer; with PBC cells themselves as the "target" it cost several points of
    PBC accuracy. tests/test_crosslab.py checks two stacked layers against the trained network's statistics.)
    """
    import keras

    from training.model import BACKBONE_NAME

    # The BN layers live in the nested backbone (whose input is the image) or in the model itself.
    base = model.get_layer(BACKBONE_NAME) if any(layer.name == BACKBONE_NAME for layer in model.layers) else model
    bns = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    reference = [_channel_stats(keras.Model(base.input, layer.input), source, batch) for layer in bns]
    for layer, (mu_s, s_s) in zip(bns, reference):
        mu_t, s_t = _channel_stats(keras.Model(base.input, layer.input), target, batch)
        gamma, beta, m, var = (w.astype(np.float64) for w in layer.get_weights())
        S = np.sqrt(var + layer.epsilon)
        ratio = s_t / s_s
        layer.set_weights([gamma, beta, mu_t - (mu_s - m) * ratio, (S * ratio) ** 2 - layer.epsilon])
    return len(bns)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export.adapt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source-model", required=True, help="the shipped source model .json (its float_reference .keras is adapted; calibration and OOD are copied)")
    p.add_argument("--source-data", required=True, help="the source dataset folder (splits.csv + images/), e.g. the PBC set")
    p.add_argument("--target", required=True, help="folder of unlabelled images from the new microscope (or fields + boxes.csv)")
    p.add_argument("--name", required=True, help="name of the adapted model, e.g. wbc-mylab")
    p.add_argument("--out", default="models")
    p.add_argument("--n-source", type=int, default=600, help="source training images used for the statistics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", help="also write the adaptation summary (before/after) to this JSON, e.g. for export.card")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    existing = sorted(Path(args.out).glob(f"{args.name}.*"))
    if existing:  # never over a shipped model or an earlier adaptation (--out defaults to models/)
        print(f"error: {args.out} already holds {', '.join(p.name for p in existing)}; choose another --name or --out.",
              file=sys.stderr)
        return 1

    import keras

    import hematovision
    from export.tflite import write_model
    from training.data import load_split, standardized

    out = Path(args.out)
    src_json = Path(args.source_model)
    src_meta = json.loads(src_json.read_text())
    spec = InputSpec.from_json(src_meta["input"])
    labels = tuple(src_meta["labels"])
    target = np.stack(target_images(args.target, spec.height))
    train = load_split(args.source_data, "train", spec.height, labels)
    rng = np.random.default_rng(args.seed)
    source = train.images[rng.choice(len(train.images), size=min(args.n_source, len(train.images)), replace=False)]
    to_input = lambda a: standardized(a, spec).astype(np.float32) * spec.scale + spec.offset  # noqa: E731

    source_clf = hematovision.load_model(args.source_model)
    before = float(np.mean([source_clf.predict(img, cam=False).uncertain for img in target]))
    model = keras.models.load_model(src_json.parent / src_meta["float_reference"]["file"])
    n = align_batchnorm(model, to_input(source), to_input(target))
    calibration_images = np.concatenate([target, source])  # int8 ranges must cover both set-ups
    json_path = write_model(model, name=args.name, labels=labels, spec=spec, calibration_images=calibration_images, out_dir=out,
                            extra={k: src_meta[k] for k in ("task", "architecture") if k in src_meta})
    meta = json.loads(json_path.read_text())
    meta["calibration"] = src_meta.get("calibration", {})
    if src_meta.get("ood"):
        ood_file = out / f"{args.name}.ood.npz"
        shutil.copy(Path(args.source_model).parent / src_meta["ood"]["file"], ood_file)
        meta["ood"] = {**src_meta["ood"], "file": ood_file.name, "note": f"copied from {src_meta['name']} (features are aligned to it)"}
    meta["adaptation"] = {
        "method": "batch-norm statistics alignment to the source (AdaBN for frozen BN), export/adapt.py",
        "source_model": src_meta["name"], "source_sha256": src_meta["sha256"],
        "target": str(args.target), "n_target_images": int(len(target)), "n_source_images": int(len(source)), "bn_layers": n,
        "command": "python -m export.adapt " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    json_path.write_text(json.dumps(meta, indent=2))
    adapted = hematovision.load_model(json_path)
    after = float(np.mean([adapted.predict(img, cam=False).uncertain for img in target]))
    meta["adaptation"]["target_flagged_uncertain"] = {"before": before, "after": after}
    agreement = int8_agreement(model, adapted, target, to_input)
    meta["adaptation"]["int8_float_argmax_agreement_on_target"] = agreement
    json_path.write_text(json.dumps(meta, indent=2))
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(meta["adaptation"], indent=2))
    print(json.dumps(meta["adaptation"], indent=2))
    return 0 if agreement >= MIN_INT8_AGREEMENT else _withdraw(out, args.name, agreement)


def _withdraw(out: Path, name: str, agreement: float) -> int:
    """Remove this run's model files (the model must not be used) and say why; returns the exit status 1."""
    for path in out.glob(f"{name}.*"):
        path.unlink()
    print(f"error: NOT WRITTEN: the int8 model agrees with its aligned float model on only {100 * agreement:.0f} % of "
          f"the target images (< {100 * MIN_INT8_AGREEMENT:.0f} %); the alignment left activations the int8 ranges "
          "cannot hold. Label a few cells and use `python -m hematovision adapt` instead.", file=sys.stderr)
    return 1


def int8_agreement(model, adapted, target: np.ndarray, to_input) -> float:
    """Share of target images on which the exported int8 model and the aligned float model give the same class."""
    from hematovision.preprocessing import prepare

    float_top = model.predict(to_input(target), verbose=0).argmax(axis=1)
    int8_top = np.array([adapted.forward(prepare(img, adapted.spec.input))[0].argmax() for img in target])
    return float((float_top == int8_top).mean())


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
