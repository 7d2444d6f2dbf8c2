"""CI smoke test of the cross-lab recipe (wide zoom, stain and optics augmentation, colour transfer, output
stride 16) followed by CAM supervision: train, evaluate, export int8, load (see test_training_smoke.py)."""

import pytest

from tests.test_training_smoke import tiny_dataset, train_evaluate_export_load  # noqa: F401 (tiny_dataset: fixture)

pytestmark = pytest.mark.slow


def test_crosslab_recipe_then_cam_supervision(tiny_dataset, tmp_path):
    train_evaluate_export_load(tiny_dataset, tmp_path, "none", "crosslab")
