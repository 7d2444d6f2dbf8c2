"""The technologist's review in the station database: append-only verified labels, the latest wins, the model's label
is kept, old databases migrate, kill -9 loses no committed review, bad input and bad files are refused with nothing
written. The CLI, CSV and `adapt --db`: tests/test_review_cli.py."""

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hematovision.errors import StationLogError
from hematovision.station.review import (
    InvalidLabelError,
    ReviewerError,
    ReviewError,
    UnknownCellError,
    add_review,
    history,
    latest_reviews,
    verified_count,
)
from hematovision.station.log import StationLog
from hematovision.station.schema import SCHEMA_VERSION, CorruptDatabaseError, NotAStationDatabaseError
from tests.conftest import ROOT

WBC = ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet")

# The schema as the first release wrote it (hematovision/stationlog.py, user_version 1): a database made by that
# code, to migrate. Kept here on purpose, independent of hematovision.station.schema.SCHEMA_V1.
RELEASE_1_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id INTEGER PRIMARY KEY, started TEXT NOT NULL, ended TEXT, stop_reason TEXT, source TEXT,
    mode TEXT, model_name TEXT NOT NULL, model_sha256 TEXT NOT NULL, labels TEXT NOT NULL, config TEXT, software TEXT, summary TEXT);
CREATE TABLE IF NOT EXISTS cells (id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL REFERENCES sessions(id), time TEXT NOT NULL,
    frame_index INTEGER NOT NULL, source_frame TEXT NOT NULL, cell_in_frame INTEGER NOT NULL, x0 INTEGER NOT NULL,
    y0 INTEGER NOT NULL, x1 INTEGER NOT NULL, y1 INTEGER NOT NULL, label TEXT NOT NULL, confidence REAL NOT NULL,
    uncertain INTEGER NOT NULL, out_of_distribution INTEGER, probabilities TEXT NOT NULL, model_name TEXT NOT NULL,
    model_sha256 TEXT NOT NULL, crop_path TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS cells_by_session ON cells(session_id);
CREATE TABLE IF NOT EXISTS frames (id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL REFERENCES sessions(id), time TEXT NOT NULL,
    frame_index INTEGER NOT NULL, source_frame TEXT NOT NULL, status TEXT NOT NULL, sharpness REAL,
    cells_found INTEGER NOT NULL DEFAULT 0, cells_classified INTEGER NOT NULL DEFAULT 0, detail TEXT);
CREATE INDEX IF NOT EXISTS frames_by_session ON frames(session_id);
"""


def make_db(path: Path, labels, *, uncertain=(), ood=(), atypical=None, model_labels=WBC, sha="a" * 64,
            probabilities=None, counted=None) -> list[int]:
    """A station database with one finished session whose cells the model labelled ``labels`` (crops written);
    the cells at the indices in ``ood`` are out of distribution, those in ``atypical`` atypical (None: no verdict);
    ``probabilities``: index -> that cell's stored probabilities (default {label: 0.9}); ``counted``: the classes
    a scoped model counts (None: all)."""
    crops = path.parent / "crops"
    crops.mkdir(parents=True, exist_ok=True)
    ids = []
    with StationLog(path) as db:
        s = db.open_session(model_name="wbc", model_sha256=sha, labels=model_labels, source="folder:in", mode="cell",
                            counted=counted)
        for i, label in enumerate(labels):
            crop = SimpleNamespace(image=np.full((24, 24, 3), 40 + 9 * i % 200, np.uint8), box=(0, 0, 24, 24))
            pred = SimpleNamespace(label=label, confidence=0.9, uncertain=i in uncertain,
                                   probabilities=(probabilities or {}).get(i, {label: 0.9}), model="wbc",
                                   out_of_distribution=i in ood, atypical=None if atypical is None else i in atypical)
            ids.append(db.add_cell(s.id, frame=SimpleNamespace(index=i, name=f"f{i:03d}.png"), index_in_frame=0, crop=crop,
                                   prediction=pred, model_sha256=sha, crops_dir=crops))
        db.close_session(s.id, stop_reason="source ended")
    return ids


def count_reviews(path: Path) -> int:
    with sqlite3.connect(path) as con:
        return con.execute("SELECT COUNT(*) FROM reviews").fetchone()[0]


@pytest.fixture
def station_db(tmp_path):
    db = tmp_path / "station.sqlite"
    make_db(db, ["neutrophil", "neutrophil", "lymphocyte", "monocyte", "eosinophil", "platelet"], uncertain=(3,))
    return db


# --- the schema -------------------------------------------------------------------------------------------------------


def release_1_db(path: Path) -> None:
    with sqlite3.connect(path, isolation_level=None) as con:
        con.executescript(RELEASE_1_SCHEMA + "PRAGMA user_version = 1;")
        con.execute("INSERT INTO sessions (id, started, source, mode, model_name, model_sha256, labels) VALUES "
                    "(1, '2025-01-01T00:00:00Z', 'folder:scan', 'cell', 'wbc', ?, ?)", ("b" * 64, json.dumps(list(WBC))))
        for i, label in enumerate(["neutrophil", "lymphocyte", "basophil"], start=1):
            con.execute("INSERT INTO cells (id, session_id, time, frame_index, source_frame, cell_in_frame, x0, y0, x1, y1, label, "
                        "confidence, uncertain, probabilities, model_name, model_sha256, crop_path) "
                        "VALUES (?, 1, 't', ?, ?, 0, 0, 0, 9, 9, ?, 0.8, 0, '{}', 'wbc', ?, ?)",
                        (i, i, f"img{i}.png", label, "b" * 64, f"crops/{i}.jpg"))
        con.execute("INSERT INTO frames (session_id, time, frame_index, source_frame, status) VALUES (1, 't', 1, 'img1.png', 'classified')")


def test_a_release_1_database_migrates_and_keeps_everything(tmp_path):
    path = tmp_path / "old.sqlite"
    release_1_db(path)
    with sqlite3.connect(path) as con:
        before = {t: con.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in ("sessions", "cells", "frames")}
    with StationLog(path, create=False) as db:
        assert db.differential(1).counts["neutrophil"] == 1
        review = add_review(db, cell_id=2, label="monocyte", reviewer="A. Smith")
        assert latest_reviews(db)[2] == review
        assert db.integrity() == "ok" and db.journal_mode == "wal"
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        for table, rows in before.items():  # every old row and value is still there; new columns are NULL
            after = con.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            assert [r[:len(rows[0])] for r in after] == rows
        assert con.execute("SELECT label FROM cells WHERE id = 2").fetchone() == ("lymphocyte",)
    with StationLog(path, create=False) as db:  # opening again is a no-op
        assert len(history(db, 2)) == 1


def columns(path: Path) -> dict:
    with sqlite3.connect(path) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index', 'trigger') ORDER BY name")]
        return {t: [c[1:] for c in con.execute(f"PRAGMA table_info({t})")] for t in tables}


def test_a_new_database_has_the_same_schema_as_a_migrated_one(tmp_path):
    release_1_db(tmp_path / "old.sqlite")
    StationLog(tmp_path / "old.sqlite").close()
    StationLog(tmp_path / "new.sqlite").close()
    assert columns(tmp_path / "old.sqlite") == columns(tmp_path / "new.sqlite")
    assert "reviews" in columns(tmp_path / "new.sqlite")


@pytest.mark.parametrize("sql", ["UPDATE reviews SET label = 'basophil'", "DELETE FROM reviews",
                                 "UPDATE cells SET label = 'basophil' WHERE id = 1"])
def test_reviews_are_append_only_and_the_model_label_is_never_overwritten(station_db, sql):
    with StationLog(station_db) as db:
        add_review(db, cell_id=1, label="lymphocyte", reviewer="A. Smith")
    with sqlite3.connect(station_db) as con, pytest.raises(sqlite3.DatabaseError, match="append-only|never changed"):
        con.execute(sql)
    with StationLog(station_db) as db:
        assert db.cell(1)["label"] == "neutrophil" and latest_reviews(db)[1].label == "lymphocyte"


# --- recording reviews ------------------------------------------------------------------------------------------------


def test_the_latest_review_of_a_cell_wins(station_db):
    with StationLog(station_db) as db:
        first = add_review(db, cell_id=3, label="lymphocyte", reviewer="A. Smith")
        second = add_review(db, cell_id=3, label="Monocyte", reviewer="  B. Jones ", note="large, folded nucleus")
        assert second.id > first.id and second.label == "monocyte" and second.reviewer == "B. Jones"
        assert latest_reviews(db) == {3: second}
        assert history(db, 3) == [first, second]
        assert db.cell(3)["label"] == "lymphocyte"  # the model's label, kept


@pytest.mark.parametrize("kwargs, error, fix", [
    (dict(cell_id=1, label="neutrophill", reviewer="A"), InvalidLabelError, "choose one of the model's classes"),
    (dict(cell_id=1, label="", reviewer="A"), InvalidLabelError, "smudge, artefact, unidentified, other"),
    (dict(cell_id=1, label="other", reviewer="A"), InvalidLabelError, "needs a note"),
    (dict(cell_id=99, label="neutrophil", reviewer="A"), UnknownCellError, "--list"),
    (dict(cell_id=1, label="neutrophil", reviewer=""), ReviewerError, "--reviewer"),
    (dict(cell_id=1, label="neutrophil", reviewer="   "), ReviewerError, "--reviewer"),
    (dict(cell_id=1, label="neutrophil", reviewer="A\x00B"), ReviewerError, "plain name"),
])
def test_bad_reviews_are_refused_and_nothing_is_written(station_db, kwargs, error, fix):
    with StationLog(station_db) as db:
        with pytest.raises(error, match=fix) as info:
            add_review(db, **kwargs)
        assert isinstance(info.value, ValueError) and isinstance(info.value, ReviewError)
    assert count_reviews(station_db) == 0


@pytest.mark.parametrize("label", ["smudge", "artefact", "unidentified", "other"])
def test_review_only_labels_are_left_out_of_the_verified_differential(station_db, label):
    with StationLog(station_db) as db:
        add_review(db, cell_id=1, label=label, reviewer="A", note="looks like a broken cell")
        add_review(db, cell_id=2, label="neutrophil", reviewer="A")
        add_review(db, cell_id=3, label="monocyte", reviewer="B")
        count = verified_count(db, None, WBC)
    diff = count.differential
    assert diff.total == 2 and diff.counts["neutrophil"] == 1 and diff.counts["monocyte"] == 1
    assert diff.excluded == {label: 1} and label not in diff.counts
    assert (count.cells, count.verified, count.complete) == (6, 3, False)
    assert count.agreement == {"neutrophil": (1, 2), "lymphocyte": (0, 1)}
    assert diff.percentages()["neutrophil"] == 50.0


# --- bad database files -----------------------------------------------------------------------------------------------


def foreign(path: Path) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        con.execute("INSERT INTO invoices VALUES (1, 9.5)")


BAD_FILES = {
    "text file": (lambda p: p.write_text("cell_id,label\n1,neutrophil\n"), NotAStationDatabaseError, "not an SQLite database"),
    "empty file": (lambda p: p.write_bytes(b""), NotAStationDatabaseError, "empty file"),
    "other program's SQLite": (foreign, NotAStationDatabaseError, "not a HematoVision station database"),
    "corrupt": (lambda p: p.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64), CorruptDatabaseError, "damaged|cannot open"),
}


@pytest.mark.parametrize("create", [False, True], ids=["review", "station"])
@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_a_file_that_is_not_a_station_database_is_refused_untouched(tmp_path, kind, create):
    make, error, message = BAD_FILES[kind]
    path = tmp_path / "x.sqlite"
    make(path)
    before = path.read_bytes()
    if kind == "empty file" and create:  # an empty file (e.g. `touch station.sqlite`) becomes a new database
        StationLog(path, create=True).close()
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        return
    with pytest.raises(error, match=message) as info:
        StationLog(path, create=create)
    assert isinstance(info.value, StationLogError) and isinstance(info.value, OSError)
    assert "--db" in str(info.value) or "backup" in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.sqlite"]  # no -wal / -shm left behind


# --- kill -9 during a burst of reviews ---------------------------------------------------------------------------------

BURST = """
import sys
from hematovision.station.review import add_review
from hematovision.station.log import StationLog
db = StationLog(sys.argv[1], create=False)
labels = ("lymphocyte", "monocyte", "smudge")
i = 0
while True:
    r = add_review(db, cell_id=1 + i % 6, label=labels[i % 3], reviewer="burst")
    print(r.id, r.cell_id, r.label, flush=True)
    i += 1
"""


def test_kill_9_during_a_review_burst_loses_no_committed_review(station_db):
    proc = subprocess.Popen([sys.executable, "-c", BURST, str(station_db)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    printed = []
    deadline = time.monotonic() + 60
    while len(printed) < 60 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"the review burst stopped: {proc.communicate()}")
        printed.append(line.split())
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=10)
    printed += [line.split() for line in rest.splitlines() if len(line.split()) == 3]  # printed before the kill: committed
    assert proc.returncode == -signal.SIGKILL and len(printed) >= 60
    with sqlite3.connect(station_db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {(str(i), str(c), lb) for i, c, lb in con.execute("SELECT id, cell_id, label FROM reviews")}
    assert {tuple(p) for p in printed} <= stored
    with StationLog(station_db) as db:  # the latest review of each cell is at least the last one seen committed
        latest = latest_reviews(db)
        for review_id, cell_id, _ in printed:
            assert latest[int(cell_id)].id >= int(review_id)
