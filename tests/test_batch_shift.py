"""The batch-level shift check (hematovision/batch_shift.py): the binomial tail, the verdict, bad options,
and the measurement command's batch simulation (training/batch_shift.py)."""

import math

import numpy as np
import pytest

from hematovision.batch_shift import BatchShift, binomial_upper_tail, check_batch
from training.batch_shift import sequential, simulate


def _direct_tail(x, n, p):
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(x, n + 1))


@pytest.mark.parametrize("x, n, p", [(1, 10, 0.01), (2, 10, 0.01), (4, 20, 0.01), (3, 50, 0.05), (0, 5, 0.3), (7, 7, 0.5)])
def test_upper_tail_matches_the_direct_sum(x, n, p):
    assert binomial_upper_tail(x, n, p) == pytest.approx(_direct_tail(x, n, p), rel=1e-9)


@pytest.mark.parametrize("x, n, p, expected", [(1, 10, 0.01, 1 - 0.99**10), (11, 10, 0.01, 0.0), (0, 0, 0.5, 1.0),
                                               (1, 3, 0.0, 0.0), (3, 3, 1.0, 1.0)])
def test_upper_tail_golden_values_and_edges(x, n, p, expected):
    assert binomial_upper_tail(x, n, p) == pytest.approx(expected, abs=1e-12)


def test_upper_tail_stays_finite_for_thousands_of_cells():
    tail = binomial_upper_tail(300, 3000, 0.01)  # 10 % against an expected 1 %: astronomically unlikely
    assert 0.0 <= tail < 1e-100
    assert binomial_upper_tail(30, 3000, 0.01) == pytest.approx(0.5, abs=0.05)  # about the mean: about half


@pytest.mark.parametrize("flags, shifted", [
    ([False] * 50, False),                      # the training lab's own cells
    ([True] + [False] * 49, False),             # one odd cell in 50: P(X >= 1) = 0.39
    ([True] * 2 + [False] * 8, False),          # 2 of 10: P = 0.0043, not below 0.001
    ([True] * 3 + [False] * 7, True),           # 3 of 10: P = 1.1e-4
    ([True] * 4 + [False] * 16, True),          # a fifth, like zheng2 under wbc
    ([True] * 4, False),                        # fewer than 5 cells: not judged
])
def test_verdict(flags, shifted):
    check = check_batch(flags)
    assert check.shifted is shifted and check.cells == len(flags) and check.out_of_distribution == sum(flags)
    assert (check.message() != "") is shifted


def test_cells_without_an_ood_flag_are_not_counted():
    check = check_batch([None, None, True, True, True, False, False, False, False, False, False])
    assert (check.cells, check.out_of_distribution, check.shifted) == (9, 3, True)
    assert check_batch([None] * 10).judged is False


def test_message_says_what_happened_and_what_to_do():
    text = check_batch([True] * 6 + [False] * 4).message()
    assert "6 of 10 cells" in text and "at most 1 %" in text and "python -m hematovision adapt" in text
    # a smear full of blasts trips it too: the message must not send the lab only to adaptation
    assert "blasts" in text and "specialist" in text
    assert check_batch([True] * 6 + [False] * 4).to_json()["shifted"] is True


@pytest.mark.parametrize("kwargs", [{"expected_rate": 0.0}, {"expected_rate": 1.0}, {"alpha": 0.0}, {"alpha": 1.5},
                                    {"min_cells": 0}])
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        check_batch([False] * 10, **kwargs)


def test_result_is_frozen():
    with pytest.raises(AttributeError):
        BatchShift(1, 0, 1.0, False, False).shifted = True


def _cells(ood, flagged, correct, atypical=None):
    atypical = [None] * len(ood) if atypical is None else atypical
    return {"ood": np.array(ood), "atypical": np.array(atypical, dtype=object), "flagged": np.array(flagged),
            "correct": None if correct is None else np.array(correct)}


def test_simulation_on_a_clean_lab_never_alarms_and_keeps_its_errors():
    cells = _cells([False] * 100, [False] * 100, [True] * 90 + [False] * 10)
    r = simulate(cells, 20, 200, seed=0)
    assert r["shifted_share"] == 0.0
    assert r["confidently_wrong_without_check"] == r["confidently_wrong_with_check"] == pytest.approx(0.1, abs=0.02)


def test_simulation_on_a_shifted_lab_alarms_and_catches_its_confident_errors():
    ood = [True] * 40 + [False] * 60                     # 40 % out of distribution
    cells = _cells(ood, ood, [True] * 50 + [False] * 50)  # half wrong, the wrong ones partly unflagged
    r = simulate(cells, 20, 200, seed=0)
    assert r["shifted_share"] >= 0.99 and r["confidently_wrong_with_check"] <= 0.01  # a rare batch draws <= 2 OOD cells
    assert r["confidently_wrong_without_check"] == pytest.approx(0.5, abs=0.05)


def test_simulation_without_labels_reports_the_alarm_rate_only_and_skips_big_batches():
    cells = _cells([True] * 10, [True] * 10, None)
    assert set(simulate(cells, 5, 10, seed=0)) == {"size", "batches", "shifted_share"}
    assert simulate(cells, 50, 10, seed=0) == {"size": 50, "skipped": "only 10 cells"}


# --------------------------------------------------------------------------- where a lab sees it


@pytest.mark.parametrize("ood, atypical, warned", [((), None, False), ((0,), None, False), ((0, 1, 2, 3), None, True),
                                                    ((), range(9), True), ((), range(2), False)])
def test_station_report_warns_about_a_session_from_an_unfamiliar_set_up(tmp_path, capsys, ood, atypical, warned):
    from hematovision.__main__ import main
    from tests.test_review import make_db

    db = tmp_path / "station.sqlite"
    make_db(db, ["neutrophil"] * 12, ood=ood, atypical=atypical)
    assert main(["report", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "Differential: 12 cells" in out
    assert ("WARNING: This batch looks unlike the training lab's cells: " in out) is warned
    if warned:
        assert f"{len(ood)} of 12 cells are out of distribution" in out


def test_a_schema_2_station_database_migrates_and_its_old_cells_are_judged_by_the_flag_count(tmp_path):
    """Cells logged before schema 3 have no atypical verdict (NULL); cells logged after it have one."""
    import sqlite3
    from types import SimpleNamespace

    from hematovision.station.log import StationLog
    from tests.test_review import make_db

    db = tmp_path / "station.sqlite"
    make_db(db, ["neutrophil"] * 6, ood=(0, 1, 2))
    with sqlite3.connect(db) as con:  # make it look like a schema-2 database: no score columns
        con.execute("ALTER TABLE cells DROP COLUMN ood_score")
        con.execute("ALTER TABLE cells DROP COLUMN atypical")
        con.execute("ALTER TABLE sessions DROP COLUMN counted")  # came with schema 4
        con.execute("PRAGMA user_version = 2")
    with StationLog(db, create=False) as log:
        old = log.batch_shift(1)
        assert old.shifted and old.atypical is None and old.cells == 6
        s = log.open_session(model_name="wbc", model_sha256="a" * 64, labels=("neutrophil", "lymphocyte"), source="x", mode="cell")
        crop = SimpleNamespace(image=np.zeros((8, 8, 3), np.uint8), box=(0, 0, 8, 8))
        for i in range(5):
            pred = SimpleNamespace(label="neutrophil", confidence=0.9, uncertain=False, probabilities={"neutrophil": 0.9},
                                   model="wbc", out_of_distribution=False, ood_score=0.04, atypical=True)
            log.add_cell(s.id, frame=SimpleNamespace(index=i, name=f"g{i}.png"), index_in_frame=0, crop=crop, prediction=pred,
                         model_sha256="a" * 64, crops_dir=tmp_path / "crops")
        new = log.batch_shift(s.id)
        assert new.atypical == 5 and new.shifted
        assert [c["ood_score"] for c in log.cells(s.id)] == [0.04] * 5 and [c["atypical"] for c in log.cells(1)] == [None] * 6
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 4


def test_batch_tab_summary_puts_the_warning_first():
    pytest.importorskip("gradio")
    from types import SimpleNamespace

    from hematovision.station.differential import Differential
    from hematovision.web.batch_tab import _summary

    diff = Differential(("a", "b"), counts={"a": 10})
    logged = [("x.png", "x.png", SimpleNamespace(out_of_distribution=i < 5, atypical=None), None) for i in range(10)]
    text = _summary([None] * 10, diff, logged)
    assert text.startswith("**Warning:** This batch looks unlike") and "**10** of 10 files classified" in text
    atypical = [("x.png", "x.png", SimpleNamespace(out_of_distribution=False, atypical=True), None) for _ in range(10)]
    assert "10 of 10 are atypical" in _summary([None] * 10, diff, atypical)
    calm = [("x.png", "x.png", SimpleNamespace(out_of_distribution=False, atypical=False), None) for _ in range(10)]
    assert _summary([None] * 10, diff, calm).startswith("**10** of 10 files classified")


def test_classify_cli_warns_on_stderr_and_keeps_stdout_json(tmp_path):
    """The shipped model on non-blood images (all out of distribution) and on real PBC cells (none)."""
    import json
    import subprocess
    import sys

    import cv2

    from tests.conftest import EXAMPLES, ROOT

    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(tmp_path / f"noise_{i}.png"), rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    for folder, warned in ((tmp_path, True), (EXAMPLES / "wbc", False)):
        r = subprocess.run([sys.executable, "-m", "hematovision", "classify", "--workers", "1", str(folder)],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert rows and all("label" in row for row in rows)
        assert ("warning: This batch looks unlike the training lab's cells" in r.stderr) is warned


@pytest.mark.parametrize("frames, warned", [("noise", True), ("pbc", False)])
def test_station_warns_at_the_end_of_a_session_from_an_unfamiliar_set_up(tmp_path, frames, warned):
    """The station with the shipped model, in cell mode: noise frames (all out of distribution) or real PBC cells."""
    import shutil
    import subprocess
    import sys

    import cv2

    from tests.conftest import EXAMPLES, ROOT
    from tests.test_station import station_cmd

    folder = tmp_path / "in"
    folder.mkdir()
    if frames == "noise":
        rng = np.random.default_rng(1)
        for i in range(6):
            cv2.imwrite(str(folder / f"f{i}.png"), cv2.GaussianBlur(rng.integers(0, 256, (120, 120, 3), dtype=np.uint8), (3, 3), 0))
    else:
        for path in sorted((EXAMPLES / "wbc").glob("*.jpg"))[:8]:
            shutil.copy(path, folder / path.name)
    db = tmp_path / "station.sqlite"
    r = subprocess.run(station_cmd("wbc", folder, db, "--no-watch", "--summary-every", "0.001"), capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Differential:" in r.stdout
    assert ("WARNING: This batch looks unlike the training lab's cells" in r.stdout) is warned, r.stdout
    # while the session runs, the warning comes with the running differential, once, before the final summary
    early = r.stdout.count("WARNING (so far): This batch looks unlike")
    assert early == (1 if warned else 0), r.stdout
    if warned:
        assert r.stdout.index("WARNING (so far)") < r.stdout.index("session 1:")


@pytest.mark.parametrize("ood, atypical, warned", [([0] * 10, [0] * 10, False), ([1] * 4 + [0] * 6, [None] * 10, True),
                                                    ([None] * 10, [None] * 10, False), ([0] * 10, [1] * 8 + [0] * 2, True)])
def test_review_tab_progress_warns_about_an_unfamiliar_set_up(ood, atypical, warned):
    pytest.importorskip("gradio")
    from types import SimpleNamespace

    from hematovision.web.review_view import progress

    slide = SimpleNamespace(rows=[SimpleNamespace(cell={"uncertain": 0, "out_of_distribution": o, "atypical": a}, review=None)
                                  for o, a in zip(ood, atypical)])
    text = progress(slide)
    assert text.startswith("**Warning:** This batch looks unlike") is warned
    assert "**0 of 10 verified**" in text


def test_card_section_quotes_the_report():
    from export.card_crosslab import batch_shift_section

    report = {"command": "python -m training.batch_shift --model m", "sets": {
        "pbc_test": {"cells": 100, "ood_share": 0.003, "atypical_share": 0.05, "by_size": [
            {"size": 5, "batches": 10, "shifted_share": 0.0, "confidently_wrong_without_check": 0.002,
             "confidently_wrong_with_check": 0.002}, {"size": 500, "skipped": "only 100 cells"}],
            "by_size_flag_count_only": [{"size": 5, "batches": 10, "shifted_share": 0.0}, {"size": 500, "skipped": "x"}]},
        "bccd": {"cells": 50, "ood_share": 0.9, "atypical_share": None,
                 "by_size": [{"size": 5, "batches": 10, "shifted_share": 1.0}, {"size": 500, "skipped": "only 50 cells"}]}}}
    text = "\n".join(batch_shift_section(report))
    assert "| n = 5 | n = 500 |" in text
    assert "| pbc_test | 100 | 0.3 % / 5.0 % | 0.0 % (0.0 %), confidently wrong 0.2 -> 0.2 % | - |" in text
    assert "| bccd | 50 | 90.0 % / - | 100.0 % | - |" in text and "`python -m training.batch_shift --model m`" in text


@pytest.mark.parametrize("model", ["wbc", "wbc-crosslab"])
def test_shipped_cards_show_the_measured_batch_check(model):
    import json

    from tests.conftest import ROOT

    report = json.loads((ROOT / "reports" / f"{model}_batch_shift.json").read_text())
    card = (ROOT / "models" / f"{model}.md").read_text()
    assert report["command"] in card
    z, alone = report["sets"]["zheng2"]["by_size"][2], report["sets"]["zheng2"]["by_size_flag_count_only"][2]
    assert (f"{100 * z['shifted_share']:.1f} % ({100 * alone['shifted_share']:.1f} %), confidently wrong "
            f"{100 * z['confidently_wrong_without_check']:.1f}") in card


def test_simulation_judges_as_the_product_does_and_reports_the_flag_count_alone():
    """Few cells flagged out of distribution but most atypical: only the check with the atypical count alarms."""
    cells = _cells([False] * 100, [False] * 100, None, atypical=[True] * 60 + [False] * 40)
    assert simulate(cells, 20, 50, seed=0)["shifted_share"] >= 0.95  # a rare batch draws <= 8 atypical cells of 20
    assert simulate(cells, 20, 50, seed=0, use_atypical=False)["shifted_share"] == 0.0


def test_the_measurement_refuses_a_model_without_an_ood_reference(tmp_path, capsys):
    import json
    import shutil

    from tests.conftest import ROOT
    from training.batch_shift import main

    for suffix in (".json", ".tflite", ".head.npz"):
        shutil.copy(ROOT / "models" / f"wbc{suffix}", tmp_path / f"wbc{suffix}")
    meta = json.loads((tmp_path / "wbc.json").read_text())
    meta.pop("ood")
    (tmp_path / "wbc.json").write_text(json.dumps(meta))
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "wbc.json")])
    assert "no out-of-distribution reference" in capsys.readouterr().err


# --------------------------------------------------------------------------- the atypical count


@pytest.mark.parametrize("atypical, shifted", [
    ([False] * 20, False),                       # no atypical cell
    ([True] * 2 + [False] * 18, False),          # 10 %: the expected rate itself
    ([True] * 5 + [False] * 15, False),          # 25 %: P = 0.043, x 2 (Bonferroni) = 0.087
    ([True] * 9 + [False] * 11, True),           # 45 %: P = 6.0e-5
    ([True] * 18 + [False] * 2, True),           # 90 %, like zheng2 under wbc
    ([True] * 4, False),                         # fewer than 5 cells: this count is not used
])
def test_atypical_count_verdict(atypical, shifted):
    check = check_batch([False] * len(atypical), atypical=atypical)
    assert check.shifted is shifted
    assert check.atypical == (sum(atypical) if len(atypical) >= 5 else None)


def test_two_counts_are_bonferroni_corrected():
    """3 of 10 out of distribution: P = 1.1e-4 alone; with a second count the bound is 2.3e-4, still shifted;
    the p-value of the batch is twice the smaller one."""
    one = check_batch([True] * 3 + [False] * 7)
    two = check_batch([True] * 3 + [False] * 7, atypical=[True] * 3 + [False] * 7)
    assert two.p_value == pytest.approx(2 * one.p_value, rel=1e-9) and two.shifted
    # a count just significant alone at alpha is no longer significant at alpha / 2
    alone = check_batch([False] * 20, atypical=[True] * 8 + [False] * 12)
    assert alone.p_value == pytest.approx(2 * binomial_upper_tail(8, 20, 0.10), rel=1e-9)


def test_cells_without_an_atypical_verdict_fall_back_to_the_flag_count():
    """A model without ood.atypical_threshold, or station cells logged before schema 3: None, not counted."""
    check = check_batch([True] * 3 + [False] * 7, atypical=[None] * 10)
    assert check.atypical is None and check.p_value == pytest.approx(binomial_upper_tail(3, 10, 0.01))
    assert "atypical" not in check.message()


def test_message_names_the_atypical_count():
    text = check_batch([False] * 10, atypical=[True] * 10).message()
    assert "0 of 10 cells are out of distribution" in text and "10 of 10 are atypical (expected at most 10 %)" in text


def test_bad_atypical_rate_is_refused():
    with pytest.raises(ValueError, match="expected_atypical_rate"):
        check_batch([False] * 10, expected_atypical_rate=1.0)


def test_shipped_models_carry_the_atypical_threshold_between_their_two_percentiles():
    """export.ood writes it: the 95th percentile of val scores, below the 99.9th that flags a cell."""
    import json

    from hematovision import load_model
    from tests.conftest import ROOT

    for name in ("wbc", "wbc-crosslab", "all"):
        ood = json.loads((ROOT / "models" / f"{name}.json").read_text())["ood"]
        assert 0 < ood["atypical_threshold"] < ood["threshold"]
        assert ood["measured"]["cells_atypical"]["val"] == pytest.approx(0.05, abs=0.005)  # ties among ~300-1500 val scores
        assert load_model(name).spec.atypical_threshold == ood["atypical_threshold"]


def test_prediction_marks_atypical_cells_from_the_threshold_in_the_json(tmp_path):
    """The same image is atypical or not as the JSON's threshold sits below or above its score; no threshold: None."""
    import json
    import shutil

    from hematovision import load_model
    from tests.conftest import EXAMPLES, ROOT

    image = sorted((EXAMPLES / "wbc").glob("*.jpg"))[0]
    score = load_model("wbc").predict(image, cam=False).ood_score
    for threshold, expected in ((score * 0.5, True), (score * 2, False), (None, None)):
        for suffix in (".tflite", ".head.npz", ".ood.npz"):
            shutil.copy(ROOT / "models" / f"wbc{suffix}", tmp_path / f"wbc{suffix}")
        meta = json.loads((ROOT / "models" / "wbc.json").read_text())
        meta["ood"]["atypical_threshold"] = threshold
        (tmp_path / "wbc.json").write_text(json.dumps(meta))
        pred = load_model(tmp_path / "wbc.json").predict(image, cam=False)
        assert pred.atypical is expected and pred.to_json()["atypical"] is expected


@pytest.mark.parametrize("value", ["high", float("nan")])
def test_a_bad_atypical_threshold_is_a_model_format_error(tmp_path, value):
    import json

    from hematovision.errors import ModelFormatError
    from hematovision.spec import ModelSpec
    from tests.conftest import ROOT

    meta = json.loads((ROOT / "models" / "wbc.json").read_text())
    meta["ood"]["atypical_threshold"] = value
    with pytest.raises(ModelFormatError, match="bad field"):
        ModelSpec.from_json(meta, json_path=tmp_path / "wbc.json")


def test_export_ood_writes_the_atypical_threshold_at_the_95th_percentile_of_val(tiny_models, tmp_path):
    """export.ood on the tiny model and a tiny train/val/test folder: the JSON gets the atypical threshold, the
    classifier reads it, and about 5 % of val (the percentile's share) is above it."""
    import json

    import cv2

    from export.ood import main as export_ood
    from export.ood import pooled_features
    from hematovision import load_model
    from hematovision.ood import OODModel
    from tests.conftest import copy_model
    from tests.tiny_model import LABELS, disc_image
    from training.data import load_split

    data = tmp_path / "data"
    rng = np.random.default_rng(3)
    rows = ["path,label,split"]
    for label in LABELS:
        (data / "images" / label).mkdir(parents=True)
        for i in range(30):
            cv2.imwrite(str(data / "images" / label / f"{i}.png"), cv2.cvtColor(disc_image(label, size=64, rng=rng), cv2.COLOR_RGB2BGR))
            rows.append(f"images/{label}/{i}.png,{label},{('train', 'train', 'val', 'test')[i % 4]}")
    (data / "splits.csv").write_text("\n".join(rows) + "\n")
    path = copy_model(tiny_models["tiny-int8"], tmp_path / "model")
    assert export_ood(["--model", str(path), "--data", str(data), "--k", "4", "--nonblood-per-category", "1"]) == 0
    ood = json.loads(path.read_text())["ood"]
    clf = load_model(path)
    val = load_split(data, "val", clf.spec.input.height, clf.labels)
    scores = OODModel.load(path.parent / ood["file"]).score(pooled_features(clf, val.images))
    assert ood["atypical_threshold"] == pytest.approx(float(np.percentile(scores, 95)), rel=1e-6)
    assert ood["atypical_threshold"] <= ood["threshold"] and clf.spec.atypical_threshold == ood["atypical_threshold"]
    assert ood["measured"]["cells_atypical"]["val"] == pytest.approx(float((scores > ood["atypical_threshold"]).mean()))
    assert "95 percentile of val scores" in ood["atypical_threshold_rule"]


@pytest.mark.parametrize("atypical_share, fires", [(0.0, 0.0), (0.88, 1.0)])
def test_sequential_sessions_measure_how_often_and_how_soon_the_running_check_fires(atypical_share, fires):
    """Judged after every cell: a lab like the training one never alarms; one like zheng2 (88 % atypical) alarms at
    once, from the 5th cell (5 of 5 atypical: P = 1e-5, x 2 < alpha)."""
    k = int(100 * atypical_share)
    cells = _cells([False] * 100, [False] * 100, None, atypical=[True] * k + [False] * (100 - k))
    r = sequential(cells, 50, 100, seed=0)
    assert r["ever_shifted_share"] == fires and r["cells"] == 50 and r["sessions"] == 100
    if fires:
        assert 5 <= r["first_warning_at_cells"]["median"] <= r["first_warning_at_cells"]["p90"] <= 10
    else:
        assert r["first_warning_at_cells"] is None


def test_card_section_reports_the_running_check():
    from export.card_crosslab import batch_shift_section

    report = {"command": "c", "sets": {"zheng2": {"cells": 100, "ood_share": 0.2, "atypical_share": 0.9,
                                                   "by_size": [{"size": 5, "batches": 1, "shifted_share": 1.0}],
                                                   "sequential": {"cells": 100, "sessions": 2000, "ever_shifted_share": 1.0,
                                                                  "first_warning_at_cells": {"median": 5.0, "p90": 7.0}}}}}
    text = "\n".join(batch_shift_section(report))
    assert "- zheng2, 2000 sessions of 100 cells: the warning ever fires in 100.00 %, first after 5 cells (median; " \
           "90th percentile 7)." in text
