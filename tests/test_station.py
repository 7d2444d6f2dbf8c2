"""The microscope station: frames flow, cells are logged, the differential adds up, bad frames are skipped,
signals stop it cleanly and kill -9 loses nothing committed."""

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from hematovision import load_model
from hematovision.station.sources import FakeSource
from hematovision.station.differential import Differential
from hematovision.errors import SourceError
from hematovision.station.loop import MotionGate, Station, StationConfig, assess_quality
from hematovision.station.log import StationLog
from tests.conftest import ROOT
from tests.test_field import synthetic_field


@pytest.fixture(scope="module")
def tiny(tiny_models):
    return load_model(tiny_models["tiny-float32"], num_threads=1)


def run_station(clf, frames, tmp_path, **options):
    config = StationConfig(db_path=tmp_path / "station.sqlite", summary_every=0, **options)
    printed = []
    with FakeSource(frames) as source:
        summary = Station(clf, config, printer=printed.append).run(source)
    return summary, config


def rows(db_path, sql, args=()):
    with sqlite3.connect(db_path) as db:
        return db.execute(sql, args).fetchall()


def test_field_mode_logs_every_white_cell_and_the_differential_adds_up(tiny, tmp_path):
    frames = [synthetic_field(seed=s, n_white=2)[0] for s in range(4)]
    summary, config = run_station(tiny, frames, tmp_path)
    assert summary.stop_reason == "source ended" and summary.frames == 4 and summary.cells == 8
    cells = rows(config.db_path, "SELECT frame_index, label, confidence, uncertain, model_name, model_sha256, crop_path, x0, y0, x1, y1 FROM cells")
    assert len(cells) == 8 and [c[0] for c in cells] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert {c[4] for c in cells} == {"tiny-float32"} and {c[5] for c in cells} == {tiny.spec.sha256}
    for c in cells:
        crop = config.db_path.parent / c[6]
        assert crop.is_file() and str(crop).startswith(str(config.crops_folder))
        assert c[9] - c[7] == c[10] - c[8] > 0  # square crop box
        assert Image.open(crop).size == (c[9] - c[7],) * 2
    diff = summary.differential
    assert diff.total == 8 and sum(diff.counts.values()) == 8
    assert sum(diff.percentages().values()) == pytest.approx(100.0)
    with StationLog(config.db_path) as db:
        assert db.differential(summary.session_id).counts == diff.counts
        assert db.journal_mode == "wal" and db.integrity() == "ok"
        assert db.frame_counts(summary.session_id) == {"classified": 4}


def test_cell_mode_classifies_each_frame_as_one_cell(tiny, tmp_path, disc):
    labels = ["red", "green", "blue", "red", "blue", "red"]
    summary, config = run_station(tiny, [disc(lab, seed=i) for i, lab in enumerate(labels)], tmp_path, mode="cell")
    got = [r[0] for r in rows(config.db_path, "SELECT label FROM cells ORDER BY id")]
    assert got == labels
    assert summary.differential.counts == {"red": 3, "green": 1, "blue": 2}
    assert rows(config.db_path, "SELECT x0, y0, x1, y1 FROM cells LIMIT 1") == [(0, 0, 96, 96)]


def test_blurry_empty_and_dark_frames_are_skipped_and_logged(tiny, tmp_path, caplog):
    good, _ = synthetic_field(seed=5)
    frames = [cv2.GaussianBlur(good, (0, 0), 4), np.full_like(good, 238), np.full_like(good, 5), good]
    with caplog.at_level("INFO", logger="hematovision.station.loop"):
        summary, config = run_station(tiny, frames, tmp_path)
    assert summary.skipped == {"blurry": 1, "empty": 1, "dark": 1} and summary.cells == 2
    status = [r[0] for r in rows(config.db_path, "SELECT status FROM frames ORDER BY id")]
    assert status == ["blurry", "empty", "dark", "classified"]
    assert rows(config.db_path, "SELECT MIN(frame_index) FROM cells") == [(3,)]
    text = caplog.text
    assert "skipped: blurry" in text and "skipped: empty" in text and "skipped: dark" in text


def test_focus_threshold_is_configurable():
    rgb, _ = synthetic_field(seed=6)
    soft = cv2.GaussianBlur(rgb, (0, 0), 1.5)
    s = assess_quality(soft).sharpness
    assert assess_quality(soft, min_sharpness=s - 1).ok and not assess_quality(soft, min_sharpness=s + 1).ok
    assert assess_quality(rgb, min_sharpness=0).ok


def test_same_view_is_not_classified_twice(tiny, tmp_path):
    rgb, _ = synthetic_field(seed=7)
    noisy = np.clip(rgb + np.random.default_rng(0).normal(0, 2, rgb.shape), 0, 255).astype(np.uint8)
    summary, config = run_station(tiny, [rgb, noisy, rgb], tmp_path)
    assert summary.cells == 2 and summary.skipped == {"unchanged": 2}
    with StationLog(config.db_path) as db:  # counted in the session summary, not one row per frame
        assert db.frame_counts(summary.session_id) == {"classified": 1, "unchanged": 2}


def test_a_stage_move_counts_only_the_new_cells(tiny, tmp_path):
    # One wide strip of smear; the camera sees 640 px of it, then the stage moves 260 px to the right.
    strip, boxes = synthetic_field(seed=8, size=(480, 1000), n_white=0, n_red=24, white_centres=[(200.0, 200.0), (560.0, 300.0), (820.0, 150.0)])
    first, second = strip[:, :640], strip[:, 260:900]
    summary, config = run_station(tiny, [first, second], tmp_path)
    got = rows(config.db_path, "SELECT frame_index, (x0 + x1) / 2 FROM cells ORDER BY id")
    # frame 0: the cells at x=200 and 560; frame 1: only the new one at 820 (x=560 in the frame)
    assert [g[0] for g in got] == [0, 0, 1] and abs(got[2][1] - 560) < 15, got
    assert summary.repeated_cells == 1


def test_motion_gate_registers_the_shift():
    strip, _ = synthetic_field(seed=9, size=(480, 800), n_white=2)
    gate = MotionGate()
    _, small = gate.check(strip[:, :640])
    gate.accept(small, [])
    motion, _ = gate.check(strip[:, 100:740])
    assert not motion.unchanged and motion.shift is not None
    assert motion.shift[0] == pytest.approx(-100, abs=4) and abs(motion.shift[1]) < 4


def test_target_count_and_max_frames_stop_the_run(tiny, tmp_path, disc):
    frames = [disc("red", seed=i) for i in range(10)]
    summary, config = run_station(tiny, frames, tmp_path / "a", mode="cell", target_count=4)
    assert summary.stop_reason == "target count" and summary.cells == 4
    assert rows(config.db_path, "SELECT COUNT(*) FROM cells") == [(4,)]
    summary, _ = run_station(tiny, frames, tmp_path / "b", mode="cell", max_frames=3)
    assert summary.stop_reason == "max frames" and summary.frames == 3
    fields = [synthetic_field(seed=s, n_white=2)[0] for s in range(3)]
    summary, _ = run_station(tiny, fields, tmp_path / "c", target_count=3)
    assert summary.cells == 3  # stops in the middle of the second field


def test_should_stop_ends_between_frames(tiny, tmp_path, disc):
    calls = []
    config = StationConfig(db_path=tmp_path / "s.sqlite", mode="cell", summary_every=0)
    with FakeSource([disc("red", seed=i) for i in range(10)]) as source:
        summary = Station(tiny, config).run(source, should_stop=lambda: "SIGTERM" if len(calls.append(1) or calls) > 3 else None)
    assert summary.stop_reason == "SIGTERM" and summary.frames == 3
    assert rows(config.db_path, "SELECT stop_reason FROM sessions") == [("SIGTERM",)]


def test_resume_continues_only_an_interrupted_session(tiny, tmp_path, disc):
    def failing_frames():
        yield from (disc("red", seed=i) for i in range(3))
        raise SourceError("camera unplugged")

    config = StationConfig(db_path=tmp_path / "station.sqlite", mode="cell", summary_every=0)
    with pytest.raises(SourceError), FakeSource(failing_frames()) as source:
        Station(tiny, config).run(source)
    assert rows(config.db_path, "SELECT id, stop_reason FROM sessions") == [(1, "error")]
    again, _ = run_station(tiny, [disc("blue", seed=9)], tmp_path, mode="cell", resume=True)
    assert again.session_id == 1 and again.differential.counts == {"red": 3, "green": 0, "blue": 1}
    # that session ended normally: the next run starts a new one, with or without --resume
    fresh, _ = run_station(tiny, [disc("green", seed=1)], tmp_path, mode="cell", resume=True)
    assert fresh.session_id == 2 and fresh.cells == 1


def test_fps_limits_the_rate(tiny, tmp_path, disc):
    start = time.monotonic()
    run_station(tiny, [disc("red", seed=i) for i in range(4)], tmp_path, mode="cell", fps=20)
    assert time.monotonic() - start >= 0.15


def test_differential_format_and_percentages():
    d = Differential(("neutrophil", "lymphocyte", "monocyte"))
    for label in ["neutrophil"] * 3 + ["lymphocyte"]:
        d.add(label, uncertain=label == "lymphocyte")
    assert d.percentages() == {"neutrophil": 75.0, "lymphocyte": 25.0, "monocyte": 0.0}
    text = d.format()
    assert "neutrophil" in text and "75.0 %" in text and "monocyte" in text and "1 cell(s) flagged uncertain" in text


# --- the CLI, as a subprocess -------------------------------------------------------------------------------------


def write_discs(folder: Path, n: int, disc) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    labels = [("red", "green", "blue")[i % 3] for i in range(n)]
    for i, label in enumerate(labels):
        Image.fromarray(disc(label, seed=i)).save(folder / f"cell_{i:04d}.png")
    return labels


def station_cmd(model, folder, db, *extra):
    return [sys.executable, "-m", "hematovision", "station", "--source", f"folder:{folder}", "--model", str(model), "--db", str(db),
            "--mode", "cell", *extra]


def count_rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def wait_for_rows(proc, db: Path, n: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        got = count_rows(db)
        if got >= n:
            return got
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the station logged fewer than {n} cells in {timeout} s: {proc.communicate()}")


def test_cli_runs_a_folder_then_report_prints_and_exports(tiny_models, tmp_path, disc):
    labels = write_discs(tmp_path / "in", 6, disc)
    db = tmp_path / "out" / "station.sqlite"
    r = subprocess.run(station_cmd(tiny_models["tiny-int8"], tmp_path / "in", db, "--no-watch"), capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Differential: 6 cells" in r.stdout and "stopped: source ended" in r.stdout
    csv_path = tmp_path / "cells.csv"
    r = subprocess.run([sys.executable, "-m", "hematovision", "report", "--db", str(db), "--csv", str(csv_path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Differential: 6 cells" in r.stdout and "red" in r.stdout
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 7 and lines[0].startswith("id,session_id,time")
    assert [line.split(",")[10] for line in lines[1:]] == labels
    assert all((db.parent / line.split(",")[16]).is_file() for line in lines[1:])


def test_cli_usage_and_failures(tiny_models, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "hematovision", *a], capture_output=True, text=True, cwd=ROOT, timeout=60)  # noqa: E731
    r = run("station", "--source", "webcam", "--db", str(tmp_path / "s.sqlite"), "--model", str(tiny_models["tiny-int8"]))
    assert r.returncode == 2 and "camera:INDEX" in r.stderr
    r = run("station", "--source", f"folder:{tmp_path / 'nope'}", "--db", str(tmp_path / "s.sqlite"), "--model", str(tiny_models["tiny-int8"]))
    assert r.returncode == 1 and "not a folder" in r.stderr
    r = run("report", "--db", str(tmp_path / "missing.sqlite"))
    assert r.returncode == 1 and "no such station database" in r.stderr
    assert not (tmp_path / "missing.sqlite").exists()


def test_sigterm_finishes_the_frame_and_exits_cleanly(tiny_models, tmp_path, disc):
    write_discs(tmp_path / "in", 60, disc)
    db = tmp_path / "station.sqlite"
    proc = subprocess.Popen(station_cmd(tiny_models["tiny-int8"], tmp_path / "in", db, "--fps", "20"), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rows(proc, db, 3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "SIGTERM received" in err and "stopped: SIGTERM" in out and "Differential:" in out
    with StationLog(db) as log:
        session = log.latest_session()
        assert session.ended is not None and session.stop_reason == "SIGTERM"
        assert log.integrity() == "ok"
        n = log.differential(session.id).total
        assert f"Differential: {n} cells" in out  # the printed summary is what was committed


def test_kill_9_loses_nothing_committed(tiny_models, tmp_path, disc):
    write_discs(tmp_path / "in", 200, disc)
    db = tmp_path / "station.sqlite"
    proc = subprocess.Popen(station_cmd(tiny_models["tiny-int8"], tmp_path / "in", db, "--fps", "40"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed = wait_for_rows(proc, db, 10)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        n, = con.execute("SELECT COUNT(*) FROM cells").fetchone()
        assert n >= committed
        crops = [r[0] for r in con.execute("SELECT crop_path FROM cells")]
        assert con.execute("SELECT ended FROM sessions").fetchall() == [(None,)]  # never closed: killed
    assert all((db.parent / c).is_file() for c in crops)  # no row without its crop
    # the log stays usable: report reads it, and a resumed run continues the same session
    r = subprocess.run([sys.executable, "-m", "hematovision", "report", "--db", str(db)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and f"Differential: {n} cells" in r.stdout and "interrupted" in r.stdout
    # resuming goes on with the files not yet done: every image counted exactly once
    r = subprocess.run(station_cmd(tiny_models["tiny-int8"], tmp_path / "in", db, "--resume", "--no-watch"),
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Differential: 200 cells" in r.stdout and "session 1:" in r.stdout
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(DISTINCT source_frame), COUNT(*) FROM cells").fetchone() == (200, 200)


def test_report_csv_defuses_spreadsheet_formulas(tmp_path):
    from hematovision.commands.report import _write_csv

    out = tmp_path / "cells.csv"
    assert _write_csv(out, ("source_frame", "confidence"), [{"source_frame": "=HYPERLINK(1).png", "confidence": 0.5}]) == 1
    assert out.read_text().splitlines()[1] == "'=HYPERLINK(1).png,0.5"


def test_an_invalid_frame_is_skipped_and_the_run_goes_on(tiny, tmp_path, monkeypatch):
    from hematovision.cells import detection as field
    from hematovision.errors import InvalidImageError

    real = field.crop_cells
    calls = []

    def flaky(rgb, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise InvalidImageError("a broken frame")
        return real(rgb, **kw)

    monkeypatch.setattr(field, "crop_cells", flaky)
    summary, config = run_station(tiny, [synthetic_field(seed=s)[0] for s in (1, 2)], tmp_path)
    assert summary.skipped == {"invalid": 1} and summary.cells == 2
    assert rows(config.db_path, "SELECT status, detail FROM frames ORDER BY id") == [("invalid", "a broken frame"), ("classified", "")]
