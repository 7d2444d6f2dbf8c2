"""Multi-source training (issue 12): other labs' labelled cells added to the training split
(``training.cam_supervised --extra-labelled``), and what the model card says about them."""

import cv2
import numpy as np
import pytest

from export.card import _other_labs_lines
from training.cam_supervised import _with_extra_labelled
from training.data import Split, load_labelled_folder

LABELS = ("lymphocyte", "monocyte", "neutrophil")


def _lab(tmp_path, counts, *, name="lab", size=(30, 26)):
    """A DIR/images/<label>/<image> other-lab folder; each image's grey level encodes its label index."""
    root = tmp_path / name
    for label, n in counts.items():
        (root / "images" / label).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / "images" / label / f"{i:03d}.png"), np.full((*size, 3), 50 * LABELS.index(label), np.uint8))
    return root


def _pbc(n):
    return Split(tuple(f"pbc/{i}.png" for i in range(n)), np.zeros((n, 16, 16, 3), np.uint8), np.zeros(n, np.int32))


def test_labelled_folder_is_decoded_at_the_training_size_with_its_labels(tmp_path):
    cells = load_labelled_folder(_lab(tmp_path, {"monocyte": 2, "neutrophil": 3}), 16, LABELS)
    assert cells.images.shape == (5, 16, 16, 3) and cells.images.dtype == np.uint8
    assert cells.labels.tolist() == [1, 1, 2, 2, 2]
    assert cells.images[:, 8, 8, 0].tolist() == [50, 50, 100, 100, 100]  # each image with its own label


@pytest.mark.parametrize("pbc_n, share, lab_n, copies", [(100, 0.1, 5, 2), (1000, 0.1, 5, 20), (10, 0.1, 5, 1)])
def test_each_folder_is_repeated_to_about_its_share_of_an_epoch(tmp_path, pbc_n, share, lab_n, copies):
    lab = _lab(tmp_path, {"lymphocyte": lab_n})
    merged, extras = _with_extra_labelled(_pbc(pbc_n), [lab], share, 16, LABELS)
    assert len(merged.labels) == pbc_n + copies * lab_n and len(merged.paths) == len(merged.labels)
    assert extras == [{"folder": str(lab), "cells": lab_n, "copies": copies, "counts": {"lymphocyte": lab_n}}]
    assert merged.images[:pbc_n].max() == 0  # PBC first, unchanged


def test_two_folders_are_added_each_with_its_own_copies(tmp_path):
    a = _lab(tmp_path, {"lymphocyte": 2, "monocyte": 2}, name="a")
    b = _lab(tmp_path, {"neutrophil": 10}, name="b")
    merged, extras = _with_extra_labelled(_pbc(200), [a, b], 0.1, 16, LABELS)
    assert [e["copies"] for e in extras] == [5, 2]
    assert np.bincount(merged.labels, minlength=3).tolist() == [200 + 10, 10, 20]


def test_no_extra_folders_returns_the_split_itself():
    pbc = _pbc(4)
    assert _with_extra_labelled(pbc, [], 0.1, 16, LABELS) == (pbc, [])


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_share_outside_0_1_is_refused(tmp_path, share):
    with pytest.raises(ValueError, match="--extra-share"):
        _with_extra_labelled(_pbc(4), [_lab(tmp_path, {"monocyte": 1})], share, 16, LABELS)


def test_label_folder_that_is_not_a_class_is_refused(tmp_path):
    lab = _lab(tmp_path, {"monocyte": 1})
    (lab / "images" / "smudge").mkdir()
    cv2.imwrite(str(lab / "images" / "smudge" / "x.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\['smudge'\] are not among"):
        load_labelled_folder(lab, 16, LABELS)


def test_folder_without_images_is_refused(tmp_path):
    (tmp_path / "empty" / "monocyte").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        load_labelled_folder(tmp_path / "empty", 16, LABELS)


def test_card_names_each_other_lab_and_says_it_is_not_zero_shot():
    lines = _other_labs_lines([{"folder": "otherlabs/zheng1", "cells": 300, "copies": 4, "counts": {"monocyte": 48}}])
    text = "\n".join(lines)
    assert "`otherlabs/zheng1`: 300 cells (monocyte 48), each repeated 4 times" in text
    assert "not** zero-shot" in text
    assert _other_labs_lines([]) == []
