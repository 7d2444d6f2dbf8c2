"""The label check that ``adapt`` runs on a lab's cells (hematovision/label_check.py)."""

import json

import cv2
import numpy as np
import pytest

from hematovision.__main__ import main
from hematovision.adapt import adapt
from hematovision.label_check import label_disagreements, summary
from tests.conftest import copy_model
from tests.test_adapt import quiet, write_cells
from tests.tiny_model import LABELS, disc_image

LAB = ("a", "b", "c")


def test_disagreements_are_ordered_by_the_support_for_the_given_label():
    oof = np.array([[4.0, 0.0, 0.0],   # labelled a, predicted a: agrees
                    [0.0, 3.0, 0.0],   # labelled a, predicted b, weak support for a
                    [0.0, 0.5, 0.0],   # labelled c, predicted b, but c nearly as likely
                    [0.0, 0.0, 2.0]])  # labelled c, agrees
    rows = label_disagreements(oof, np.array([0, 0, 2, 2]), ["x/0", "x/1", "x/2", "x/3"], LAB)
    assert [(r.file, r.label, r.predicted) for r in rows] == [("x/1", "a", "b"), ("x/2", "c", "b")]
    e3 = np.exp(3.0)
    assert rows[0].p_label == pytest.approx(1 / (e3 + 2), rel=1e-9)  # golden: softmax of [0, 3, 0] at the label
    assert rows[0].p_predicted == pytest.approx(e3 / (e3 + 2), rel=1e-9)
    assert rows[0].p_label < rows[1].p_label


def test_temperature_changes_the_probabilities_not_the_list():
    oof = np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    hot, cold = (label_disagreements(oof, np.array([0, 0]), ["p", "q"], LAB, temperature=t) for t in (4.0, 0.5))
    assert [r.file for r in hot] == [r.file for r in cold] == ["p"]
    assert hot[0].p_label > cold[0].p_label


@pytest.mark.parametrize("oof, y, paths, kwargs", [
    (np.zeros((2, 3)), np.array([0]), ["p", "q"], {}),        # one label for two cells
    (np.zeros((2, 3)), np.array([0, 1]), ["p"], {}),          # one path for two cells
    (np.zeros(3), np.array([0]), ["p"], {}),                   # logits not (N, C)
    (np.zeros((1, 3)), np.array([0]), ["p"], {"temperature": 0.0}),
])
def test_bad_input_is_refused(oof, y, paths, kwargs):
    with pytest.raises(ValueError):
        label_disagreements(oof, y, paths, LAB, **kwargs)


def test_summary_lists_the_first_cells_and_counts_the_rest():
    rows = label_disagreements(np.tile([0.0, 1.0, 0.0], (12, 1)), np.zeros(12, int), [f"a/{i}" for i in range(12)], LAB)
    text = summary(rows, 20, show=3)
    assert "12 of 20 cells disagree" in text and text.count("labelled a, predicted b") == 3 and "and 9 more" in text
    assert "every one of the 5 cells agrees" in summary([], 5)


def test_adapt_names_the_mislabelled_cell(tiny_models, tmp_path):
    """A blue disc filed under 'red' is the first cell the adapted model's JSON asks a specialist to check."""
    tiny = copy_model(tiny_models["tiny-float32"], tmp_path / "src")
    cells = write_cells(tmp_path / "cells", {lb: 8 for lb in LABELS}, shift=False)
    wrong = disc_image("blue", size=64, rng=np.random.default_rng(7))
    cv2.imwrite(str(cells / "red" / "zz_mislabelled.png"), cv2.cvtColor(wrong, cv2.COLOR_RGB2BGR))
    lines = []
    meta = json.loads(adapt(tiny, cells, tmp_path / "out", log=lines.append).read_text())
    check = meta["adaptation"]["label_check"]
    assert check["cells"][0]["file"] == "red/zz_mislabelled.png" and check["cells"][0]["predicted"] == "blue"
    assert len(check["cells"]) <= 2 and "out-of-fold" in check["rule"]
    assert any("red/zz_mislabelled.png: labelled red, predicted blue" in line for line in lines)


def test_clean_cells_give_an_empty_check_and_the_cli_says_so(tiny_models, tmp_path, capsys):
    tiny = copy_model(tiny_models["tiny-float32"], tmp_path / "src")
    cells = write_cells(tmp_path / "cells", {lb: 6 for lb in LABELS}, shift=False)
    assert main(["adapt", "--model", str(tiny), "--cells", str(cells), "--out", str(tmp_path / "out"), "--name", "lab"]) == 0
    out = capsys.readouterr()
    assert "label check: every one of the 18 cells agrees" in out.out + out.err
    meta = json.loads((tmp_path / "out" / "lab.json").read_text())
    assert meta["adaptation"]["label_check"]["cells"] == []


def test_quiet_log_is_accepted(tiny_models, tmp_path):
    tiny = copy_model(tiny_models["tiny-float32"], tmp_path / "src")
    cells = write_cells(tmp_path / "cells", {lb: 3 for lb in LABELS}, shift=False)
    assert adapt(tiny, cells, tmp_path / "out", log=quiet).exists()


def test_review_tab_summary_asks_to_check_the_disagreeing_cells():
    from hematovision.web.review_actions import adaptation_summary

    cv = {"folds": 3, "before": {"accuracy": 0.5, "balanced_accuracy": 0.5}, "after": {"accuracy": 0.9, "balanced_accuracy": 0.9}}
    data = {"adaptation": {"cross_validation": cv, "cells": {"count_per_class": {"red": 3, "blue": 3}},
                           "label_check": {"cells": [{"file": "red/cell-0000042.png", "label": "red", "predicted": "blue",
                                                      "p_label": 0.12, "p_predicted": 0.8}]}}}
    text = adaptation_summary("tiny-lab", data)
    assert "**Check these labels** (1 verified cell(s)" in text
    assert "cell-0000042: verified as red, cross-validation says blue (p 0.12 for red)" in text
    data["adaptation"]["label_check"]["cells"] = []
    assert "Check these labels" not in adaptation_summary("tiny-lab", data)


def test_label_audit_reports_a_whole_set_with_a_contact_sheet(tiny_models, tmp_path):
    """training.label_audit: one report per folder, the mislabelled cell first, a JPEG sheet beside it, tiny classes left out."""
    from training.label_audit import main as audit_main

    tiny = copy_model(tiny_models["tiny-float32"], tmp_path / "src")
    cells = write_cells(tmp_path / "lab1" / "images", {"red": 8, "green": 8, "blue": 1}, shift=False)
    wrong = disc_image("green", size=64, rng=np.random.default_rng(3))
    cv2.imwrite(str(cells / "red" / "zz.png"), cv2.cvtColor(wrong, cv2.COLOR_RGB2BGR))
    assert audit_main(["--model", str(tiny), "--cells", str(tmp_path / "lab1"), "--out", str(tmp_path / "r" / "{name}.json")]) == 0
    report = json.loads((tmp_path / "r" / "lab1.json").read_text())
    assert report["classes_left_out"] == {"blue": 1} and report["count_per_class"] == {"green": 8, "red": 9}
    assert report["label_check"]["cells"][0]["file"] == "red/zz.png"
    assert report["out_of_fold_accuracy"]["n"] == 17 and 0 < report["out_of_fold_accuracy"]["value"] < 1
    sheet = cv2.imread(report["contact_sheet"])
    assert report["contact_sheet"].endswith(".jpg") and sheet is not None and sheet.shape[1] == 6 * 160
