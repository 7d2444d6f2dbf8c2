"""The batch-level shift check (hematovision/batch_shift.py): the binomial tail, the verdict, bad options,
and the measurement command's batch simulation (training/batch_shift.py)."""

import math

import numpy as np
import pytest

from hematovision.batch_shift import BatchShift, binomial_upper_tail, check_batch
from training.batch_shift import simulate


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
    assert check_batch([True] * 6 + [False] * 4).to_json()["shifted"] is True


@pytest.mark.parametrize("kwargs", [{"expected_rate": 0.0}, {"expected_rate": 1.0}, {"alpha": 0.0}, {"alpha": 1.5},
                                    {"min_cells": 0}])
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        check_batch([False] * 10, **kwargs)


def test_result_is_frozen():
    with pytest.raises(AttributeError):
        BatchShift(1, 0, 1.0, False, False).shifted = True


def _cells(ood, flagged, correct):
    return {"ood": np.array(ood), "flagged": np.array(flagged), "correct": None if correct is None else np.array(correct)}


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


@pytest.mark.parametrize("ood, warned", [((), False), ((0,), False), ((0, 1, 2, 3), True)])
def test_station_report_warns_about_a_session_from_an_unfamiliar_set_up(tmp_path, capsys, ood, warned):
    from hematovision.__main__ import main
    from tests.test_review import make_db

    db = tmp_path / "station.sqlite"
    make_db(db, ["neutrophil"] * 12, ood=ood)
    assert main(["report", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "Differential: 12 cells" in out
    assert ("WARNING: This batch looks unlike the training lab's cells: 4 of 12 cells" in out) is warned


def test_batch_tab_summary_puts_the_warning_first():
    pytest.importorskip("gradio")
    from types import SimpleNamespace

    from hematovision.station.differential import Differential
    from hematovision.web.batch_tab import _summary

    diff = Differential(("a", "b"), counts={"a": 10})
    logged = [("x.png", "x.png", SimpleNamespace(out_of_distribution=i < 5), None) for i in range(10)]
    text = _summary([None] * 10, diff, logged)
    assert text.startswith("**Warning:** This batch looks unlike") and "**10** of 10 files classified" in text
    calm = [("x.png", "x.png", SimpleNamespace(out_of_distribution=False), None) for _ in range(10)]
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
    r = subprocess.run(station_cmd("wbc", folder, db, "--no-watch"), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Differential:" in r.stdout
    assert ("WARNING: This batch looks unlike the training lab's cells" in r.stdout) is warned, r.stdout


@pytest.mark.parametrize("ood, warned", [([0] * 10, False), ([1] * 4 + [0] * 6, True), ([None] * 10, False)])
def test_review_tab_progress_warns_about_an_unfamiliar_set_up(ood, warned):
    pytest.importorskip("gradio")
    from types import SimpleNamespace

    from hematovision.web.review_view import progress

    slide = SimpleNamespace(rows=[SimpleNamespace(cell={"uncertain": 0, "out_of_distribution": o}, review=None) for o in ood])
    text = progress(slide)
    assert text.startswith("**Warning:** This batch looks unlike") is warned
    assert "**0 of 10 verified**" in text


def test_card_section_quotes_the_report():
    from export.card_crosslab import batch_shift_section

    report = {"command": "python -m training.batch_shift --model m", "sets": {
        "pbc_test": {"cells": 100, "ood_share": 0.003, "by_size": [
            {"size": 5, "batches": 10, "shifted_share": 0.0, "confidently_wrong_without_check": 0.002,
             "confidently_wrong_with_check": 0.002}, {"size": 500, "skipped": "only 100 cells"}]},
        "bccd": {"cells": 50, "ood_share": 0.9, "by_size": [{"size": 5, "batches": 10, "shifted_share": 1.0},
                                                            {"size": 500, "skipped": "only 50 cells"}]}}}
    text = "\n".join(batch_shift_section(report))
    assert "| n = 5 | n = 500 |" in text
    assert "| pbc_test | 100 | 0.3 % | 0.0 % (confidently wrong 0.2 -> 0.2 %) | - |" in text
    assert "| bccd | 50 | 90.0 % | 100.0 % | - |" in text and "`python -m training.batch_shift --model m`" in text


@pytest.mark.parametrize("model", ["wbc", "wbc-crosslab"])
def test_shipped_cards_show_the_measured_batch_check(model):
    import json

    from tests.conftest import ROOT

    report = json.loads((ROOT / "reports" / f"{model}_batch_shift.json").read_text())
    card = (ROOT / "models" / f"{model}.md").read_text()
    assert report["command"] in card
    z = report["sets"]["zheng2"]["by_size"][2]
    assert f"{100 * z['shifted_share']:.1f} % (confidently wrong {100 * z['confidently_wrong_without_check']:.1f}" in card


def test_simulation_tests_against_the_rate_it_is_given():
    """The score-based variant counts 'atypical' cells against a higher expected rate: 2 of 10 is then not a shift."""
    cells = _cells([True] * 20 + [False] * 80, [False] * 100, None)
    assert simulate(cells, 100, 1, seed=0)["shifted_share"] == 1.0
    assert simulate(cells, 100, 1, seed=0, expected_rate=0.3)["shifted_share"] == 0.0


def test_atypical_percentile_needs_pbc(capsys):
    from training.batch_shift import main

    with pytest.raises(SystemExit):
        main(["--model", "wbc", "--atypical-percentile", "95"])
    assert "needs --pbc" in capsys.readouterr().err
