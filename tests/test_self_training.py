"""Self-training's data plumbing (training/self_training.py): the unlabelled/eval halves and the unlabelled pool.
The FixMatch run itself is a slow smoke test in tests/test_training_smoke_crosslab.py."""

import json

import cv2
import numpy as np
import pytest

from training.self_training import half_of, main, unlabelled_images, write_halves


def _lab(tmp_path, counts):
    """A DIR/images/<label>/<image> other-lab folder of small coloured squares."""
    root = tmp_path / "lab"
    for label, n in counts.items():
        (root / "images" / label).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / "images" / label / f"{label}_{i:03d}.png"), np.full((24, 20, 3), 20 * i % 255, np.uint8))
    return root


@pytest.mark.parametrize("name, half", [("a.png", half_of("a.png")), ("neutrophil_001.png", half_of("neutrophil_001.png"))])
def test_half_is_a_fixed_function_of_the_name(name, half):
    assert half_of(name) == half in ("unlabelled", "eval")


def test_halves_split_every_image_once_and_keep_labels(tmp_path):
    lab = _lab(tmp_path, {"lymphocyte": 30, "neutrophil": 20})
    counts = write_halves(lab, tmp_path / "halves")
    assert counts["unlabelled"] + counts["eval"] == 50 and min(counts.values()) >= 10  # a hash: roughly half each
    unl = {p.name for p in (tmp_path / "halves" / "lab_unlabelled").rglob("*.png")}
    ev = {p.name for p in (tmp_path / "halves" / "lab_eval").rglob("*.png")}
    assert not unl & ev and len(unl | ev) == 50
    for p in (tmp_path / "halves" / "lab_eval").rglob("*.png"):
        assert p.parent.name == p.name.split("_")[0] and p.resolve().exists()  # label kept, link resolves
    assert write_halves(lab, tmp_path / "halves") == counts  # re-running is harmless


def test_halves_command_prints_counts_per_folder(tmp_path, capsys):
    lab = _lab(tmp_path, {"monocyte": 6})
    assert main(["halves", "--cells", str(lab), "--out", str(tmp_path / "h")]) == 0
    name, counts = capsys.readouterr().out.strip().split(" ", 1)
    assert name == "lab" and sum(json.loads(counts).values()) == 6


def test_unlabelled_pool_reads_images_at_any_depth_and_resizes(tmp_path):
    lab = _lab(tmp_path, {"eosinophil": 3, "basophil": 2})
    (lab / "notes.txt").write_text("not an image")
    images, sources = unlabelled_images([lab], None, 16)
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8 and len(sources) == 5


def test_unlabelled_pool_that_is_empty_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no unlabelled images"):
        unlabelled_images([tmp_path / "empty"], None, 16)


def test_learning_status_counts_confident_cells_per_class_and_the_rest():
    pytest.importorskip("tensorflow")
    from training.self_training import learning_status

    probs = np.array([[0.95, 0.05, 0.0], [0.92, 0.08, 0.0], [0.1, 0.9, 0.0], [0.5, 0.3, 0.2]])
    np.testing.assert_allclose(learning_status(probs, 0.9).numpy(), [0.5, 0.25, 0.0, 0.25], atol=1e-6)


@pytest.mark.parametrize("status, expected", [
    ([0.6, 0.2, 0.0, 0.2], [0.9, 0.9 * (1 / 3) / (2 - 1 / 3), 0.0]),  # the best-learnt class keeps tau
    ([0.1, 0.1, 0.0, 0.8], [0.9 * 0.125 / 1.875, 0.9 * 0.125 / 1.875, 0.0]),  # mostly unsure: all thresholds low
])
def test_flexmatch_thresholds_follow_the_learning_status(status, expected):
    pytest.importorskip("tensorflow")
    from training.self_training import class_thresholds

    np.testing.assert_allclose(class_thresholds(np.array(status), 0.9).numpy(), expected, atol=1e-6)
