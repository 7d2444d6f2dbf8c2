"""The whole lab loop on real cells from another microscope (zheng1), through the public CLI:

station session with the shipped model -> set-up warning -> technologist's reviews (CSV import) -> ``adapt --db``
-> a second session on other cells of the same microscope with the adapted model: no warning, and right far
more often. Needs the shared data (skips without it)."""

import csv
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_data

pytestmark = pytest.mark.slow

#: cells per class in the reviewed session (A) and the later one (B); zheng1 has 22 eosinophils, 53 lymphocytes...
SESSION_A = {"eosinophil": 10, "lymphocyte": 20, "monocyte": 20, "neutrophil": 30}
SESSION_B = {"eosinophil": 10, "lymphocyte": 20, "monocyte": 20, "neutrophil": 30}


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    """Two disjoint folders of zheng1 cells, each file named <label>__<original name> (the truth, for the test)."""
    import shutil

    images = require_data("otherlabs", "zheng1", "images")
    a, b = tmp_path / "session_a", tmp_path / "session_b"
    for folder in (a, b):
        folder.mkdir()
    for label in SESSION_A:
        files = sorted((images / label).iterdir())
        for i, f in enumerate(files[: SESSION_A[label] + SESSION_B[label]]):
            shutil.copy(f, (a if i < SESSION_A[label] else b) / f"{label}__{f.name}")
    return a, b


def _run(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "hematovision", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def _station(model: str, folder: Path, db: Path) -> str:
    return _run("station", "--source", f"folder:{folder}", "--model", model, "--db", str(db), "--mode", "cell",
                "--no-watch", "--summary-every", "0.001").stdout


def _accuracy(db: Path) -> float:
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT source_frame, label FROM cells").fetchall()
    return sum(frame.split("__")[0] == label for frame, label in rows) / len(rows)


def test_a_lab_adapts_from_its_reviewed_cells_and_the_warning_stops(tmp_path):
    a, b = _folders(tmp_path)
    db_a = tmp_path / "a.sqlite"
    out = _station("wbc", a, db_a)
    assert "WARNING (so far): This batch looks unlike the training lab's cells" in out
    # the technologist verifies every cell of session A (here: the true labels, from the file names)
    with sqlite3.connect(db_a) as con:
        cells = con.execute("SELECT id, source_frame FROM cells ORDER BY id").fetchall()
    sheet = tmp_path / "reviews.csv"
    with open(sheet, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("cell_id", "label", "reviewer")] + [(i, f.split("__")[0], "A. Tech") for i, f in cells])
    _run("review", "--db", str(db_a), "--import", str(sheet))
    _run("adapt", "--model", "wbc", "--db", str(db_a), "--out", str(tmp_path / "models"), "--name", "wbc-zheng1")
    adapted = tmp_path / "models" / "wbc-zheng1.json"
    # The same verified cells as a labelled folder (to share, audit or measure): adapt --cells on it fits the same head.
    _run("review", "--db", str(db_a), "--export-cells", str(tmp_path / "lab-cells"))
    counts = {d.name: len(list(d.iterdir())) for d in (tmp_path / "lab-cells").iterdir() if d.is_dir()}
    assert counts == {label: n for label, n in SESSION_A.items()}
    _run("adapt", "--model", "wbc", "--cells", str(tmp_path / "lab-cells"), "--out", str(tmp_path / "models2"), "--name",
         "wbc-zheng1")
    assert (tmp_path / "models2" / "wbc-zheng1.head.npz").read_bytes() == (tmp_path / "models" / "wbc-zheng1.head.npz").read_bytes()
    # session B: other cells of the same microscope
    db_source, db_adapted = tmp_path / "b_source.sqlite", tmp_path / "b_adapted.sqlite"
    assert "WARNING" in _station("wbc", b, db_source)
    out = _station(str(adapted), b, db_adapted)
    assert "WARNING" not in out, out
    source, new = _accuracy(db_source), _accuracy(db_adapted)
    print(f"session B ({sum(SESSION_B.values())} zheng1 cells): wbc {source:.2f}, adapted {new:.2f}")
    assert source < 0.5 and new >= 0.75
