"""CI smoke test of the whole pipeline: train 1 epoch on a handful of images at tiny size,
evaluate, export int8, load the result through hematovision."""

import csv
import importlib
import json
import shutil

import pytest

from tests.conftest import EXAMPLES, data_dir

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_dataset(tmp_path):
    """A PBC-shaped dataset folder built from examples/wbc (2 real images per class)."""
    root = tmp_path / "pbc-mini"
    rows = []
    for path in sorted((EXAMPLES / "wbc").glob("*.jpg")):
        label = path.name.split("__")[0]
        (root / "images" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / "images" / label / path.name)
        for split in ("train", "val", "test"):
            rows.append({"path": f"images/{label}/{path.name}", "label": label, "split": split})
    with open(root / "splits.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["path", "label", "split"])
        w.writeheader()
        w.writerows(rows)
    return root


def run(module, *args):
    """``python -m module args`` in this process: its ``main(argv)`` (TensorFlow is imported once per session, not
    once per command; the command lines themselves are covered by tests/test_cli_help.py)."""
    assert importlib.import_module(module).main([str(a) for a in args]) == 0, module


def _crosslab_args(tmp_path):
    """The cross-lab recipe: wide-zoom/stain/optics augmentation, colour transfer, output stride 16, larger decode."""
    pool = tmp_path / "pool.npz"
    run("training.colour_pool", "--images", EXAMPLES / "hard", EXAMPLES / "all", "--out", pool)
    return ["--augment", "crosslab", "--colour-pool", pool, "--decode-size", "40", "--output-stride", "16"]


def test_train_evaluate_export_load(tiny_dataset, tmp_path):
    """The lab recipe with a Reinhard stain reference (the cross-lab recipe: test_training_smoke_crosslab.py,
    a module of its own so that the two runs can go to different test workers)."""
    train_evaluate_export_load(tiny_dataset, tmp_path, "reinhard", "lab")


def train_evaluate_export_load(tiny_dataset, tmp_path, stain, recipe):
    weights = data_dir().parent / "weights" / "mobilenet_v2_0.35_imagenet_notop.weights.h5"
    run_dir, models = tmp_path / "run", tmp_path / "models"
    extra = _crosslab_args(tmp_path) if recipe == "crosslab" else ["--augment", "lab"]
    run("training.train", "--dataset", "pbc", "--data", tiny_dataset, "--weights", weights if weights.exists() else "none",
        "--img-size", "32", "--epochs", "1", "--head-epochs", "1", "--batch-size", "8", "--stain-norm", stain, *extra,
        "--out", run_dir)
    for name in ("config.json", "history.csv", "curves.png", "best.keras", "backbone.weights.h5", "evaluation.json", "confusion_test.png", "confusion_test.csv"):
        assert (run_dir / name).exists(), name
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert {"calibration", "val", "test"} <= set(evaluation) and evaluation["calibration"]["temperature"] > 0
    run("training.evaluate", "--run", run_dir)
    run("export.tflite", "--run", run_dir, "--name", "smoke", "--out", models, "--force")
    import hematovision

    clf = hematovision.load_model(models / "smoke.json")
    meta = clf.spec.raw
    assert clf.model.input_detail["dtype"].__name__ == "int8"
    assert meta["quantization"] == "int8" and "parity_with_float" in meta["metrics"]
    assert "python -m training.train" in meta["provenance"]["train_command"]
    # The stain reference fitted in training travels through the run config into the shipped JSON.
    config = json.loads((run_dir / "config.json").read_text())
    assert meta["input"]["stain_normalization"] == config["input"]["stain_normalization"]
    assert (clf.spec.input.stain is not None) == (stain == "reinhard")
    pred = clf.predict(next((EXAMPLES / "wbc").glob("*.jpg")))
    assert pred.label in clf.labels and abs(sum(pred.probabilities.values()) - 1) < 1e-6
    # Output stride 16 doubles the CAM's resolution (32 px input: 2x2 instead of 1x1), and the dataset's
    # facts reach the model JSON through the run config.
    assert meta["outputs"]["features"]["shape"][1] == (2 if recipe == "crosslab" else 1)
    assert meta["display_name"] == "White-cell type (8 classes)" and meta["examples"] == "wbc"
    if recipe == "crosslab":
        assert config["colour_pool"]["images"] > 0 and "output stride 16" in meta["architecture"]
    # CAM supervision from either run: the cross-lab one as it is (output stride 16 already), the lab one rebuilt
    # at output stride 16 first and distilled from itself as the teacher (the recipe tried for wbc).
    # The cross-lab fine-tune also takes "another lab's" labelled cells (here the same tiny set, as a folder tree).
    recipe_args = (["--colour-pool", tmp_path / "pool.npz", "--extra-labelled", tiny_dataset, "--extra-share", "0.5"]
                   if recipe == "crosslab"
                   else ["--augment", "lab", "--output-stride", "16", "--teacher", run_dir / "best.keras",
                         "--min-cam-inside", "0.5", "--mixstyle", "1.0"])
    _cam_supervised_from(run_dir, tiny_dataset, tmp_path, recipe_args)


def _cam_supervised_from(run_dir, tiny_dataset, tmp_path, recipe_args):
    """CAM supervision fine-tunes a trained run and writes what export.tflite reads."""
    cam_dir = tmp_path / "cam-run"
    run("training.cam_supervised", "--init-model", run_dir / "best.keras", "--data", tiny_dataset, "--img-size", "32",
        "--decode-size", "40", *recipe_args, "--epochs", "1", "--batch-size", "8", "--out", cam_dir)
    history = json.loads((cam_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1] and 0.0 <= history[1]["val_cam_inside"] <= 1.0
    config = json.loads((cam_dir / "config.json").read_text())
    assert config["args"]["output_stride"] == 16 and len(config["args"]["init_model_sha256"]) == 64
    extras = config["args"]["extra_labelled_cells"]
    assert [e["copies"] for e in extras] == ([1] if "--extra-labelled" in recipe_args else [])
    n_pbc = len(list((EXAMPLES / "wbc").glob("*.jpg")))  # each image once in train
    assert sum(config["train_counts"].values()) == n_pbc + sum(e["cells"] * e["copies"] for e in extras)
    teacher = config["args"]["teacher"]
    assert (teacher is not None) == (len(config["args"]["teacher_sha256"] or "") == 64)
    import keras

    from training.model import backbone

    saved = backbone(keras.models.load_model(cam_dir / "best.keras"))
    assert saved.output.shape[1] == 2  # 32 px / stride 16
    # Trained with MixStyle (the lab recipe here), saved as the plain network: nothing for export or the Pi to know.
    assert config["args"]["mixstyle"] == (1.0 if "--mixstyle" in recipe_args else 0.0)
    assert not [layer for layer in saved.layers if "mixstyle" in layer.name]
    # What export.tflite reads from a run folder (its export path is the one tested above).
    for name in ("best.keras", "train_summary.json", "evaluation.json", "backbone.weights.h5"):
        assert (cam_dir / name).exists(), name
    assert {"labels", "input", "args", "command", "dataset_facts", "train_counts"} <= set(config)
    assert config["command"].startswith("python -m training.cam_supervised")
    assert {"alpha", "dropout", "data"} <= set(config["args"])
    if extras:  # the other labs' cells reach the model JSON's provenance (and from there the card)
        run("export.tflite", "--run", cam_dir, "--name", "ml-smoke", "--out", tmp_path / "ml-models", "--force")
        meta = json.loads((tmp_path / "ml-models" / "ml-smoke.json").read_text())
        assert meta["provenance"]["data"]["other_labs_labelled"] == extras


def test_outside_share_is_the_cam_mass_off_the_cell():
    """The loss term, by hand: a CAM only on the cell scores 0 outside; only off the cell, 1; half-half, 0.5."""
    tf = pytest.importorskip("tensorflow")
    import numpy as np

    from training.cam_supervised import _outside_share

    kernel = tf.constant([[1.0, 0.0], [0.0, 1.0]])  # 2 channels -> 2 classes, identity head
    feats = np.zeros((3, 2, 2, 2), np.float32)
    feats[0, 0, 0, 0] = 1.0                            # class 0 evidence on the cell only
    feats[1, 1, 1, 0] = 1.0                            # class 0 evidence off the cell only
    feats[2, 0, 0, 0] = feats[2, 1, 1, 0] = 1.0        # both
    masks = np.zeros((3, 4, 4, 1), np.float32)
    masks[:, :2, :2] = 1.0                             # the cell: the top-left quarter (one feature cell)
    y = tf.constant([0, 0, 0])
    out = _outside_share(tf.constant(feats), kernel, y, tf.constant(masks)).numpy()
    np.testing.assert_allclose(out, [0.0, 1.0, 0.5], atol=1e-5)
