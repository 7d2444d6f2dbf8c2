"""The few-shot protocol (``python -m training.fewshot``): one command, one report per lab, fitted as adapt fits."""

import json

import pytest

from tests.conftest import copy_model
from tests.test_adapt import LABELS, write_cells


@pytest.fixture
def tiny(tiny_models, tmp_path):
    return copy_model(tiny_models["tiny-float32"], tmp_path / "src")


def test_one_command_writes_a_report_per_lab(tiny, tmp_path):
    from training.fewshot import main

    shifted = write_cells(tmp_path / "labs" / "shifted", {lb: 8 for lb in LABELS}, shift=True)
    same = write_cells(tmp_path / "labs" / "same", {lb: 8 for lb in LABELS}, shift=False, seed=1)
    out = tmp_path / "reports" / "fewshot_{name}.json"
    assert main(["--model", str(tiny), "--cells", str(shifted), str(same), "--k", "3", "--draws", "3", "--out", str(out)]) == 0
    reports = {name: json.loads((tmp_path / "reports" / f"fewshot_{name}.json").read_text()) for name in ("shifted", "same")}
    for report in reports.values():
        (r,) = report["results"]
        assert r["k"] == 3 and r["classes"] == 3 and r["test_cells_per_draw"] == 15
        assert sum(r["adapted"]["l2_chosen"].values()) == 3 and "--cells" in report["command"]
        matrix = r["confusion_pooled"]["rows_true_columns_predicted"]
        assert r["confusion_pooled"]["labels"] == list(LABELS) and sum(map(sum, matrix)) == 3 * 15
        assert sum(matrix[i][i] for i in range(3)) / 45 == pytest.approx(r["adapted"]["mean"])
        assert len(r["adapted"]["per_draw"]) == 3 and sum(r["adapted"]["per_draw"]) / 3 == pytest.approx(r["adapted"]["mean"], abs=1e-4)
    shifted_r = reports["shifted"]["results"][0]
    # The colour-shifted lab: the source model is wrong, the head refitted on 3 cells per class is right.
    assert shifted_r["source"]["mean"] < 0.5 and shifted_r["adapted"]["mean"] >= 0.9


@pytest.mark.parametrize("cells, out, reason", [(["a/x", "b/y"], "r.json", "put {name} in --out"),
                                                (["a/x", "b/x"], "r_{name}.json", "share a name")])
def test_several_labs_need_distinct_report_paths(tmp_path, capsys, cells, out, reason):
    from training.fewshot import main

    with pytest.raises(SystemExit) as exc:
        main(["--cells", *[str(tmp_path / c) for c in cells], "--out", str(tmp_path / out)])
    assert exc.value.code == 2 and reason in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("--draws", "0"), ("--k", "0"), ("--k", "-5"), ("--l2", "nan"), ("--l2", "0"),
                                           ("--draws", "2.5"), ("--l2-grid", "-1e-4"), ("--l2-grid", "inf")])
def test_numbers_that_would_give_an_empty_or_nan_report_are_usage_errors(tmp_path, capsys, option, value):
    """--draws 0 averaged no draws into a NaN report; each is now refused before anything is loaded."""
    from training.fewshot import main

    with pytest.raises(SystemExit) as exc:
        main(["--cells", str(tmp_path / "lab"), "--out", str(tmp_path / "r.json"), option, value])
    assert exc.value.code == 2 and f"argument {option}" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_the_l2_grid_is_what_the_draws_choose_from(tiny, tmp_path):
    """--l2-grid (a measurement option) replaces the values each draw's cross-validation chooses l2 from."""
    from training.fewshot import main

    lab = write_cells(tmp_path / "labs" / "shifted", {lb: 8 for lb in LABELS}, shift=True)
    out = tmp_path / "r.json"
    assert main(["--model", str(tiny), "--cells", str(lab), "--k", "3", "--draws", "2", "--l2-grid", "0.5", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["l2_grid"] == [0.5] and report["results"][0]["adapted"]["l2_chosen"] == {"0.5": 2}


def test_a_fixed_l2_and_a_grid_are_not_given_together(tmp_path, capsys):
    from training.fewshot import main

    with pytest.raises(SystemExit) as exc:
        main(["--cells", str(tmp_path / "lab"), "--out", str(tmp_path / "r.json"), "--l2", "1e-3", "--l2-grid", "1e-4", "1e-3"])
    assert exc.value.code == 2 and "not both" in capsys.readouterr().err


def test_jitter_views_are_recorded_and_the_shifted_lab_is_still_fixed(tiny, tmp_path):
    """--jitter-views (a measurement option): recorded in the report; the test cells and the fix are unchanged."""
    from training.fewshot import main

    lab = write_cells(tmp_path / "labs" / "shifted", {lb: 8 for lb in LABELS}, shift=True)
    args = ["--model", str(tiny), "--cells", str(lab), "--k", "3", "--draws", "2"]
    assert main([*args, "--jitter-views", "4", "--out", str(tmp_path / "j.json")]) == 0
    report = json.loads((tmp_path / "j.json").read_text())
    assert report["jitter_views"] == 4 and "--jitter-views 4" in report["command"]
    (r,) = report["results"]
    assert r["test_cells_per_draw"] == 15 and r["adapted"]["mean"] >= 0.9  # still fixes the shifted lab


def test_jitter_changes_an_image_mildly_and_is_seeded():
    import numpy as np

    from training.fewshot_jitter import jitter

    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    a, b = jitter(rgb, np.random.default_rng(1)), jitter(rgb, np.random.default_rng(1))
    assert a.shape == rgb.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    flat = np.full((64, 64, 3), 128, np.uint8)  # a flat grey stays grey within brightness x0.9-1.1 and gamma 0.9-1.1
    out = jitter(flat, np.random.default_rng(2)).astype(int)
    assert np.ptp(out) <= 2 and 100 <= out.mean() <= 156


@pytest.mark.parametrize("value", ["-1", "2.5", "1000"])
def test_jitter_views_must_be_a_small_whole_number(tmp_path, capsys, value):
    from training.fewshot import main

    with pytest.raises(SystemExit) as exc:
        main(["--cells", str(tmp_path / "lab"), "--out", str(tmp_path / "r.json"), "--jitter-views", value])
    assert exc.value.code == 2 and "argument --jitter-views" in capsys.readouterr().err


def test_a_scoped_model_is_scored_as_it_answers(tiny, tmp_path):
    """A model with a differential scope: no test cell is called an out-of-scope class, and the cells whose first
    choice is outside the scope (here every blue disc, which the adapted head recognises) are flagged."""
    from hematovision.lab_scope import scope_model
    from training.fewshot import main

    scoped = scope_model(tiny, ["red", "green"], tmp_path / "lab", name="rg", log=lambda m: None)
    cells = write_cells(tmp_path / "labs" / "same", {lb: 8 for lb in LABELS}, shift=False, seed=1)
    out = tmp_path / "fewshot.json"
    assert main(["--model", str(scoped), "--cells", str(cells), "--k", "3", "--draws", "3", "--out", str(out)]) == 0
    (r,) = json.loads(out.read_text())["results"]
    matrix = r["confusion_pooled"]["rows_true_columns_predicted"]
    assert [row[2] for row in matrix] == [0, 0, 0]  # nothing called blue
    assert r["adapted"]["mean"] == pytest.approx(10 / 15, abs=0.07)  # red and green right, blue unnameable
    assert r["adapted"]["flagged_uncertain"]["mean"] >= 5 / 15 - 1e-9 and r["adapted"]["confidently_wrong_share"] == 0


def test_pseudo_label_option_is_recorded_and_uses_only_unflagged_unlabelled_cells(tiny, tmp_path):
    """--pseudo-label (reports/fewshot-pseudo_rule.txt): the report says so and how many cells took the adapted
    head's label and how many of those were right; without it the results carry no pseudo-label figures."""
    from training.fewshot import main

    shifted = write_cells(tmp_path / "labs" / "shifted", {lb: 10 for lb in LABELS}, shift=True)
    for flag, out in (([], tmp_path / "plain.json"), (["--pseudo-label"], tmp_path / "pseudo.json")):
        assert main(["--model", str(tiny), "--cells", str(shifted), "--k", "3", "--draws", "2", "--out", str(out), *flag]) == 0
    plain, pseudo = (json.loads((tmp_path / f).read_text()) for f in ("plain.json", "pseudo.json"))
    assert plain["pseudo_label"] is False and "pseudo_labels" not in plain["results"][0]
    (r,) = pseudo["results"]
    assert pseudo["pseudo_label"] is True
    assert 0 < r["pseudo_labels"]["per_draw_mean"] <= r["test_cells_per_draw"]  # only the draw's unlabelled cells
    assert r["pseudo_labels"]["right"] >= 0.9 and r["adapted"]["mean"] >= 0.9


def test_pseudo_labelled_head_skips_flagged_cells():
    """The cells the adapted head flags never become pseudo-labels; labelled cells keep their own labels."""
    from types import SimpleNamespace

    import numpy as np

    from training.fewshot import pseudo_labelled_head

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(12, 1, 4))
    y = np.arange(12) % 3
    theta0 = np.zeros((5, 3))
    fit = SimpleNamespace(theta=rng.normal(size=(5, 3)), l2=1e-2)
    clf = SimpleNamespace(spec=SimpleNamespace(tta=None, scope=None), labels=("a", "b", "c"))
    train = np.arange(12) < 3
    strict = (1.0, 1.01, None)  # threshold above any probability: every cell flagged
    _, chosen = pseudo_labelled_head(feats, y, train, ~train, fit, theta0, clf, strict)
    assert not chosen.any()
    _, chosen = pseudo_labelled_head(feats, y, train, ~train, fit, theta0, clf, (1.0, 0.0, None))
    assert (chosen == ~train).all()
