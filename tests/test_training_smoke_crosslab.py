"""CI smoke test of the cross-lab recipe (wide zoom, stain and optics augmentation, colour transfer, output
stride 16) followed by CAM supervision and by self-training on unlabelled cells: train, evaluate, export int8,
load (see test_training_smoke.py)."""

import json
import shutil

import pytest

from tests.conftest import EXAMPLES
from tests.test_training_smoke import run, tiny_dataset, train_evaluate_export_load  # noqa: F401 (tiny_dataset: fixture)

pytestmark = pytest.mark.slow


def test_crosslab_recipe_then_cam_supervision_then_self_training(tiny_dataset, tmp_path):
    train_evaluate_export_load(tiny_dataset, tmp_path, "none", "crosslab")
    _self_training_from(tmp_path / "run", tiny_dataset, tmp_path)


def _self_training_from(run_dir, tiny_dataset, tmp_path):
    """FixMatch from the trained run on an unlabelled 'other lab' (the hard examples), then export reads it."""
    lab = tmp_path / "otherlab"
    for path in sorted((EXAMPLES / "wbc").glob("*.jpg")):
        (lab / path.name.split("__")[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, lab / path.name.split("__")[0] / path.name)
    run("training.self_training", "halves", "--cells", lab, "--out", tmp_path / "halves")
    out = tmp_path / "st-run"
    run("training.self_training", "train", "--init-model", run_dir / "best.keras", "--data", tiny_dataset,
        "--unlabelled", tmp_path / "halves" / "otherlab_unlabelled", tmp_path / "halves" / "otherlab_eval",
        "--colour-pool", tmp_path / "pool.npz", "--img-size", "32", "--decode-size", "40", "--epochs", "1",
        "--batch-size", "8", "--unlabelled-batch", "4", "--threshold", "0.0", "--flexible", "--out", out)
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert history[1]["pseudo_labelled_share"] == 1.0 and history[1]["loss_unlabelled"] > 0  # tau 0: every per-class threshold is 0
    config = json.loads((out / "config.json").read_text())
    assert config["command"].startswith("python -m training.self_training train")
    assert config["args"]["unlabelled_images"] == len(list(lab.rglob("*.jpg"))) and config["args"]["output_stride"] == 16
    assert abs(sum(config["initial_learning_status"]) - 1) < 1e-3  # --flexible: started from one pass of the model
    for name in ("best.keras", "train_summary.json", "evaluation.json", "backbone.weights.h5", "unlabelled_sources.txt"):
        assert (out / name).exists(), name
    run("export.tflite", "--run", out, "--name", "st-smoke", "--out", tmp_path / "st-models", "--force")
    import hematovision

    model = hematovision.load_model(tmp_path / "st-models" / "st-smoke.json")
    assert "output stride 16" in json.loads((tmp_path / "st-models" / "st-smoke.json").read_text())["architecture"]
    pred = model.predict(next((EXAMPLES / "wbc").glob("*.jpg")))
    assert abs(sum(pred.probabilities.values()) - 1) < 1e-6
