"""Export a training run to TFLite for the edge, with its metadata JSON.

    python -m export.tflite --run runs/wbc --name wbc [--quant int8|float16|float32] [--out models]

int8 is full-integer post-training quantization: weights and activations are
int8 with an affine map real = scale * (q - zero_point) per tensor (per channel
for conv weights), ranges calibrated on a representative set of training
images; inputs and outputs are int8 too. The model has two outputs, the logits
and the last feature map, so the device computes CAM in numpy.

After writing the files, the model is loaded back through the public
``hematovision`` API: the temperature and the uncertain threshold are fitted on
`val` with the exported model itself, then `val` and `test` are scored, and the
parity with the float Keras model is reported. An int8 model that loses more
than 0.5 accuracy points against float is not shipped (exit 1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hematovision.registry import sha256_file
from hematovision.spec import FORMAT_VERSION, InputSpec
from training import metrics
from training.data import DESCRIPTIONS, FACTS, load_split, make_dataset, standardized

MAX_INT8_ACCURACY_DROP = 0.005


def convert(model, train_images: np.ndarray, spec: InputSpec, quant: str, *, n_calibration: int = 400, seed: int = 0) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quant in ("int8", "float16"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quant == "int8":
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(train_images), size=min(n_calibration, len(train_images)), replace=False)
        calibration = standardized(train_images[pick], spec)

        def representative():
            for image in calibration:
                x = image.astype(np.float32) * spec.scale + spec.offset
                yield [x[None]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def write_model(model, *, name: str, labels, spec: InputSpec, calibration_images: np.ndarray, quant: str = "int8",
                out_dir: str | Path = "models", extra: dict | None = None) -> Path:
    """Convert a one-output Keras classifier (GAP -> dense head named 'logits', feature map
    layer named 'features') and write <name>.tflite, <name>.head.npz and <name>.json."""
    from hematovision.runtime import TFLiteModel
    from training.model import LOGITS_NAME, with_feature_output

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tflite_path = out / f"{name}.tflite"
    tflite_path.write_bytes(convert(with_feature_output(model), calibration_images, spec, quant))
    kernel, bias = (w.astype(np.float32) for w in model.get_layer(LOGITS_NAME).get_weights())
    head_path = out / f"{name}.head.npz"
    np.savez(head_path, weights=kernel, bias=bias)
    # Which TFLite output is which: logits are (1, C), the feature map (1, h, w, K).
    rt = TFLiteModel(tflite_path)
    shapes = rt.output_shapes
    logits_index = next(i for i, s in enumerate(shapes) if s == (1, len(labels)))
    features_index = next(i for i, s in enumerate(shapes) if len(s) == 4)
    metadata = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "file": tflite_path.name,
        "sha256": sha256_file(tflite_path),
        "size_bytes": tflite_path.stat().st_size,
        **(extra or {}),
        "labels": list(labels),
        "descriptions": {label: DESCRIPTIONS.get(label, "") for label in labels},
        "input": spec.to_json() | {"dtype": str(np.dtype(rt.input_detail["dtype"]))},
        "outputs": {
            "logits": {"index": logits_index, "shape": list(shapes[logits_index]), "meaning": "pre-softmax logits; probabilities = softmax(logits / temperature)"},
            "features": {"index": features_index, "shape": list(shapes[features_index]), "meaning": "last convolutional feature map, for CAM"},
        },
        "cam": {"method": "CAM = ReLU(sum_k w_kc A_k), equal to Grad-CAM up to scale for the GAP -> dense head",
                "head_file": head_path.name, "head_sha256": sha256_file(head_path)},
        "quantization": quant,
    }
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps(metadata, indent=2))
    return json_path


def _stride_text(args: dict) -> str:
    """Architecture note for a backbone whose last stage runs at output stride 16 (8x8 map at 128 px)."""
    return ", output stride 16 (last stage dilated)" if args.get("output_stride", 32) == 16 else ""


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def model_outputs(clf, images: np.ndarray):
    """Logits and feature maps of the exported model for pre-decoded images, through
    ``Classifier.forward`` (the same path, test-time augmentation included, as predict)."""
    from hematovision.preprocessing import prepare

    pairs = [clf.forward(prepare(img, clf.spec.input)) for img in images]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export.tflite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="training run folder")
    p.add_argument("--name", required=True, help="model name (wbc, all, or your own)")
    p.add_argument("--quant", choices=("int8", "float16", "float32"), default="int8")
    p.add_argument("--out", default="models", help="folder for <name>.tflite/.json/.head.npz")
    p.add_argument("--tta", choices=("auto", "dihedral8", "none"), default="auto",
                   help="test-time augmentation: auto = dihedral8 only if it raises val accuracy (measured here)")
    p.add_argument("--force", action="store_true", help="write even if int8 loses more than 0.5 accuracy points")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Export, score the exported model, write its metadata; 1 (files removed) when int8 loses too much."""
    args = parse_args(argv)
    import keras

    from training.evaluate import calibrate_and_report, write_confusion

    run, out = Path(args.run), Path(args.out)
    config = json.loads((run / "config.json").read_text())
    labels, spec = tuple(config["labels"]), InputSpec.from_json(config["input"])
    t0 = time.time()
    splits = {s: load_split(config["args"]["data"], s, spec.height, labels, limit=config["args"].get("limit_per_class"))
              for s in ("train", "val", "test")}
    model = keras.models.load_model(run / "best.keras")
    json_path = write_model(model, name=args.name, labels=labels, spec=spec, calibration_images=splits["train"].images,
                            quant=args.quant, out_dir=out, extra=_model_facts(config))
    metadata = json.loads(json_path.read_text())
    keras_path = _save_float_reference(model, metadata, out / f"{args.name}.keras")
    head_path = out / metadata["cam"]["head_file"]

    # Score the exported model itself (single view, then with dihedral TTA), choose on val,
    # calibrate on val, report val and test.
    y = {split: splits[split].labels for split in ("val", "test")}
    single, chosen = _score_with_tta(json_path, metadata, splits, mode=args.tta)
    report = calibrate_and_report({split: chosen[split][0] for split in chosen}, y, labels)
    parity = _parity(model, splits["test"], spec, single["test"], kernel=np.load(head_path)["weights"],
                     temperature=report["calibration"]["temperature"])
    metadata.update({
        "calibration": report["calibration"],
        "metrics": {"val": report["val"], "test": report["test"], "parity_with_float": parity},
        "provenance": _provenance(config, run, y, argv),
        "intended_use": "Research and education only. Not a diagnostic device; every result needs review by a qualified specialist.",
    })
    json_path.write_text(json.dumps(metadata, indent=2))
    write_confusion(report["test"], labels, out / f"{args.name}_confusion_test", f"{args.name} ({args.quant} TFLite) - test")
    tflite_path = json_path.with_suffix(".tflite")
    print(json.dumps(parity, indent=2))
    _print_summary(args, tflite_path, report, parity, seconds=time.time() - t0)
    if args.quant == "int8" and _accuracy_drop(parity) > MAX_INT8_ACCURACY_DROP and not args.force:
        for path in (tflite_path, json_path, head_path, keras_path):
            path.unlink(missing_ok=True)
        print(f"NOT SHIPPED: int8 loses {100 * _accuracy_drop(parity):.2f} points (> {100 * MAX_INT8_ACCURACY_DROP:.1f}); "
              "files removed", file=sys.stderr)
        return 1
    return 0


def _model_facts(config: dict) -> dict:
    """What the model JSON says about the task, the examples, the architecture and the red-cell scale, from the run."""
    a, labels = config["args"], config["labels"]
    # Runs made before config.json carried the dataset's facts fall back to training/data.py's table.
    facts = config.get("dataset_facts") or FACTS[config["dataset"]].to_json()
    return {"task": facts["task"], "display_name": facts["display_name"], "examples": facts["examples"],
            "architecture": f"MobileNetV2 alpha {a['alpha']}{_stride_text(a)} -> GAP -> dropout {a['dropout']} -> dense {len(labels)}",
            "morphology": {"reference_file": facts["morphology_reference"],
                           "red_cell_fraction": facts["red_cell_fraction"],
                           "meaning": "red-cell diameter in px = red_cell_fraction * sqrt(H * W) of a typical input image"}}


def _save_float_reference(model, metadata: dict, keras_path: Path) -> Path:
    """Save the float Keras model beside the export and record it in ``metadata`` (in memory; written later)."""
    model.save(keras_path)
    metadata["float_reference"] = {"file": keras_path.name, "sha256": sha256_file(keras_path),
                                   "meaning": "the float Keras model this was quantized from (benchmarks, adaptation)"}
    return keras_path


def _score_with_tta(json_path: Path, metadata: dict, splits: dict, *, mode: str = "auto") -> tuple[dict, dict]:
    """(single view, chosen) outputs of the exported model on val and test: {split: (logits, features)}.

    The model is loaded from ``json_path`` as written so far (single view).
    With ``mode`` auto, dihedral8 test-time augmentation is kept only if it
    raises val accuracy; dihedral8 keeps it, none never tries it. The choice
    and the val accuracies go into ``metadata``, which is written to
    ``json_path`` (the TTA model is loaded from it).
    """
    import hematovision

    clf, y_val = hematovision.load_model(json_path), splits["val"].labels
    single = {split: model_outputs(clf, splits[split].images) for split in ("val", "test")}
    chosen = single
    val_acc = {"none": float((single["val"][0].argmax(1) == y_val).mean())}
    if mode != "none":
        metadata["test_time_augmentation"] = "dihedral8"
        json_path.write_text(json.dumps(metadata, indent=2))
        clf_tta = hematovision.load_model(json_path)
        with_tta = {split: model_outputs(clf_tta, splits[split].images) for split in ("val", "test")}
        val_acc["dihedral8"] = float((with_tta["val"][0].argmax(1) == y_val).mean())
        if mode == "dihedral8" or val_acc["dihedral8"] > val_acc["none"]:
            chosen = with_tta
        else:
            metadata["test_time_augmentation"] = None
    metadata["test_time_augmentation_selection"] = {
        "val_accuracy": val_acc, "rule": "dihedral8 (8 views, logits averaged) only if it raises val accuracy",
        "chosen": metadata.get("test_time_augmentation")}
    json_path.write_text(json.dumps(metadata, indent=2))
    return single, chosen


def _parity(model, test, spec: InputSpec, exported: tuple[np.ndarray, np.ndarray], *, kernel: np.ndarray,
            temperature: float) -> dict:
    """Float Keras against the exported model (single view, like for like) on the test split.

    ``exported`` is its (logits, feature maps); CAMs are compared by Pearson r
    on about 200 test images, for the float model's top class.
    """
    from training.model import with_feature_output

    y = test.labels
    ds = make_dataset(test, spec, batch_size=128, training=False)
    f_logits, f_feats = with_feature_output(model).predict(ds, verbose=0)
    q_logits, q_feats = exported
    f_acc = float((f_logits.argmax(1) == y).mean())
    q_acc = float((q_logits.argmax(1) == y).mean())
    cams_r = [_cam_pearson(f_feats[i], q_feats[i], kernel, int(f_logits[i].argmax()), spec)
              for i in range(0, len(y), max(1, len(y) // 200))]
    return {
        "split": "test",
        "float_accuracy": f_acc,
        "exported_accuracy": q_acc,
        "accuracy_drop_points": round(100 * (f_acc - q_acc), 3),
        "argmax_agreement": float((f_logits.argmax(1) == q_logits.argmax(1)).mean()),
        "max_probability_difference": float(np.abs(metrics.softmax(f_logits, temperature)
                                                   - metrics.softmax(q_logits, temperature)).max()),
        "cam_pearson_mean": float(np.nanmean(cams_r)),
        "cam_pearson_min": float(np.nanmin(cams_r)),
    }


def _cam_pearson(float_features: np.ndarray, exported_features: np.ndarray, kernel: np.ndarray, c: int,
                 spec: InputSpec) -> float:
    """Pearson r of the class-``c`` CAMs of one image from the two models, upsampled to the input size."""
    from hematovision import cam as cam_maps

    def upsampled(features):
        return cam_maps.upsample(cam_maps.class_activation_map(features, kernel, c), spec.height, spec.width)

    return _pearson(upsampled(float_features), upsampled(exported_features))


def _accuracy_drop(parity: dict) -> float:
    """Float minus exported test accuracy, as a fraction (the shipping rule's quantity)."""
    return parity["float_accuracy"] - parity["exported_accuracy"]


def _provenance(config: dict, run: Path, y: dict, argv) -> dict:
    """Data, commands, initialisation, training time and BN check (from the run), machine, versions, commit, time."""
    a = config["args"]
    summary_path = run / "train_summary.json"
    train_summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return {
        "data": {"dataset": config["dataset"], "path_used": a["data"], "counts_train": config["train_counts"],
                 "n_val": int(len(y["val"])), "n_test": int(len(y["test"])),
                 **({"other_labs_labelled": a["extra_labelled_cells"]} if a.get("extra_labelled_cells") else {})},
        "train_command": config["command"],
        "export_command": "python -m export.tflite " + " ".join(argv if argv is not None else sys.argv[1:]),
        "init": a.get("init_from") or a.get("weights"),
        "train_seconds": train_summary.get("train_seconds"),
        "bn_check": train_summary.get("bn_check"),
        "machine": config.get("machine"),
        "versions": config.get("versions"),
        "git_commit": _git_commit(),
        "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _print_summary(args: argparse.Namespace, tflite_path: Path, report: dict, parity: dict, *, seconds: float) -> None:
    """One line: size, val and test accuracy (and single-view), macro-F1, temperature, threshold, time taken."""
    cal = report["calibration"]
    print(f"{args.name}: {args.quant} {tflite_path.stat().st_size / 1024:.0f} KB; val acc {report['val']['accuracy']:.4f}, "
          f"test acc {report['test']['accuracy']:.4f} (single view {parity['exported_accuracy']:.4f}) macro-F1 "
          f"{report['test']['macro_f1']:.4f}; T={cal['temperature']:.3f} threshold={cal['uncertain_threshold']:.3f} "
          f"({seconds:.0f}s)")


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
