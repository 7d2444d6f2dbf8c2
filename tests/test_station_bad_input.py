"""Bad input to the station, `report` and `review`: one clear `error: ...` line (exit 1, or 2 for usage), never a
traceback, a hang or a silent wrong answer, and nothing already saved lost (the database, an earlier export)."""

import json
import os
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image

from hematovision.__main__ import main
from hematovision.errors import SourceError, StationLogError
from hematovision.station.loop import Station, StationConfig
from hematovision.station.log import ResumeModelError, StationLog
from hematovision.station.schema import CorruptDatabaseError
from hematovision.station.sources import FakeSource, FolderSource, OpenCVSource
from tests.test_review import make_db
from tests.test_station import rows, tiny, write_discs  # noqa: F401 - tiny: the shared fixture
from tests.test_station_resume import interrupted_folder_run, resume_folder

HUGE = "99999999999999999999999"  # over SQLite's largest INTEGER (2**63 - 1)


def cli(capsys, *argv) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit status, stdout, stderr); argparse's usage errors give their SystemExit code."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The single ``error:`` line of stderr (argparse's usage lines before it aside); fails on a traceback."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "station.sqlite"
    make_db(path, ["neutrophil", "lymphocyte", "monocyte", "eosinophil"])
    return path


def snapshot(folder: Path) -> dict:
    """The files in ``folder`` and their bytes (SQLite's -wal/-shm aside): what a refused command must leave as it was."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


# --- 1. an output over the database (or another station's database) --------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["report", "--db", "{db}", "--fhir", "{db}"],
    ["report", "--db", "{db}", "--csv", "{db}"],
    ["report", "--db", "{db}", "--csv", "{dir}/./station.sqlite"],
    ["report", "--db", "{db}", "--csv", "{db}-wal"],
    ["review", "--db", "{db}", "--export", "{db}"],
    ["report", "--db", "{db}", "--csv", "{other}"],
    ["report", "--db", "{db}", "--fhir", "{other}"],
    ["review", "--db", "{db}", "--export", "{other}"],
    ["report", "--db", "{db}", "--csv", "{dir}/out.txt", "--fhir", "{dir}/out.txt"],
], ids=["fhir=db", "csv=db", "csv=db-spelled-otherwise", "csv=db-wal", "export=db", "csv=other-db", "fhir=other-db",
        "export=other-db", "csv=fhir"])
def test_an_output_over_a_database_is_refused_and_nothing_is_lost(db, tmp_path, capsys, argv):
    other = tmp_path / "other" / "station.sqlite"
    make_db(other, ["basophil"])
    (tmp_path / "out.txt").write_text("an earlier export\n")
    before, before_other = snapshot(tmp_path), snapshot(other.parent)
    code, out, err = cli(capsys, *(a.format(db=db, other=other, dir=tmp_path) for a in argv))
    line = one_error_line(err)
    assert code == 1 and line.startswith("error: ") and "would destroy it" in line and "another output file" in line
    assert snapshot(tmp_path) == before and snapshot(other.parent) == before_other
    with StationLog(db, create=False) as log:
        assert log.integrity() == "ok" and log.differential(1).total == 4


# --- 2. a video file that gives no frame ----------------------------------------------------------------------------


def _text(path: Path) -> None:
    path.write_text("hello, not a video\n")


def _broken_jpeg(path: Path) -> None:
    ok, data = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))
    path.write_bytes(data.tobytes()[:200] + bytes(64))


def _png_header_only(path: Path) -> None:
    ok, data = cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))
    path.write_bytes(data.tobytes()[:40])


@pytest.mark.parametrize("make", [_text, _broken_jpeg, _png_header_only], ids=lambda m: m.__name__[1:])
@pytest.mark.parametrize("suffix", [".mp4", ".png"])
def test_a_video_that_yields_no_frame_is_refused_when_opened(tmp_path, make, suffix):
    path = tmp_path / f"clip{suffix}"
    make(path)
    with pytest.raises(SourceError, match="OpenCV cannot decode this video") as info:
        with OpenCVSource(path):
            pass
    assert "MP4" in str(info.value) and isinstance(info.value, OSError)


def test_a_video_still_gives_its_first_frame(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    with OpenCVSource(path) as source:
        frames = [f for f in iter(lambda: source.read(), None)]
    assert len(frames) == 3 and source.ended and [f.index for f in frames] == [0, 1, 2]


def _noisy_avi(path: Path, frames: int = 20) -> Path:
    """An MJPEG AVI of noise frames (noise: each JPEG is large, so cutting the file in half cuts frames)."""
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 72))
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize("keep, note", [(1.0, False), (0.5, True)], ids=["whole", "cut-in-half"])
def test_a_truncated_video_ends_with_a_note_saying_so(tmp_path, keep, note):
    path = _noisy_avi(tmp_path / "clip.avi")
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with OpenCVSource(path) as source:
        frames = [f for f in iter(lambda: source.read(), None)]
    assert source.ended and 0 < len(frames) <= 20
    if note:  # the container still declares 20 frames; fewer were decoded
        assert len(frames) < 20
        assert source.end_note.startswith("clip.avi: the file declares 20 frames but only ")
        assert f"only {len(frames)} could be decoded" in source.end_note and "truncated" in source.end_note
    else:
        assert len(frames) == 20 and source.end_note == ""


@pytest.mark.parametrize("declared, decoded, note", [(20.0, 10, True), (20.0, 19, False), (20.0, 20, False),
                                                     (1000.0, 989, True), (1000.0, 990, False), (float("nan"), 3, False),
                                                     (-1.0, 3, False), (0.0, 3, False)])
def test_only_a_real_shortfall_is_called_truncated(tmp_path, declared, decoded, note):
    """A count some containers only estimate (one frame or 1 % off) or do not declare is no evidence of a cut."""
    source = OpenCVSource(tmp_path / "clip.mkv")
    source._cap = SimpleNamespace(get=lambda prop: declared)
    source._count = decoded
    assert bool(source._truncation_note()) == note


def test_cli_station_warns_when_a_video_was_cut_short(tiny_models, tmp_path, capsys):
    clip = _noisy_avi(tmp_path / "clip.avi")
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    code, out, err = cli(capsys, "station", "--source", f"video:{clip}", "--db", tmp_path / "s.sqlite", "--model",
                         tiny_models["tiny-int8"])
    assert code == 0 and "stopped: source ended" in out
    assert "WARNING: clip.avi: the file declares 20 frames but only" in out and "probably truncated" in out


def test_cli_station_refuses_a_file_that_is_not_a_video(tiny_models, tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    _broken_jpeg(clip)
    code, out, err = cli(capsys, "station", "--source", f"video:{clip}", "--db", tmp_path / "s.sqlite", "--model",
                         tiny_models["tiny-int8"])
    assert code == 1 and "OpenCV cannot decode this video" in one_error_line(err) and "source ended" not in out
    assert not (tmp_path / "s.sqlite").exists()


# --- 3. the station's numeric options -------------------------------------------------------------------------------


@pytest.mark.parametrize("option, value, allowed", [
    ("--min-sharpness", "nan", ">= 0"), ("--min-sharpness", "-1", ">= 0"), ("--min-sharpness", "inf", ">= 0"),
    ("--red-cell-px", "0", "from 2 to 1000"), ("--red-cell-px", "-3", "from 2 to 1000"), ("--red-cell-px", "nan", "from 2 to 1000"),
    ("--red-cell-px", "1e9", "from 2 to 1000"),
    ("--fill", "0", "from 0.05 to 1"), ("--fill", "2", "from 0.05 to 1"), ("--fill", "nan", "from 0.05 to 1"),
    ("--fps", "nan", "> 0"), ("--fps", "0", "> 0"), ("--fps", "-5", "> 0"), ("--fps", "inf", "> 0"),
    ("--motion-threshold", "nan", "from 0 to 255"), ("--motion-threshold", "-1", "from 0 to 255"),
    ("--summary-every", "nan", ">= 0"), ("--summary-every", "-1", ">= 0"),
    ("--max-frames", "0", ">= 1"), ("--max-frames", "2.5", "whole number"), ("--max-frames", HUGE, "at most"),
    ("--target-count", "-1", ">= 1"), ("--target-count", "nan", "whole number"),
    ("--width", "0", ">= 1"), ("--height", "100000", "at most"), ("--threads", "0", ">= 1"), ("--threads", HUGE, "at most"),
])
def test_station_numeric_options_out_of_range_are_usage_errors(tmp_path, capsys, option, value, allowed):
    code, out, err = cli(capsys, "station", "--source", f"folder:{tmp_path}", "--db", tmp_path / "s.sqlite", "--no-watch",
                         f"{option}={value}")
    line = one_error_line(err)
    assert code == 2 and f"argument {option}" in line and allowed in line, line
    assert not (tmp_path / "s.sqlite").exists()


@pytest.mark.parametrize("options", [dict(min_sharpness=float("nan")), dict(fill=float("nan")), dict(red_cell_px=0.0),
                                     dict(fps=float("inf")), dict(motion_threshold=-1.0)])
def test_station_config_refuses_non_finite_and_out_of_range_numbers(tmp_path, options):
    with pytest.raises(ValueError, match="finite number"):
        StationConfig(db_path=tmp_path / "s.sqlite", **options)


# --- 4. --resume with another model ---------------------------------------------------------------------------------


def test_resume_with_another_model_is_refused_and_the_session_kept(tiny, tiny_models, tmp_path, disc):
    from hematovision import load_model

    write_discs(tmp_path / "in", 5, disc)
    db = tmp_path / "station.sqlite"
    interrupted_folder_run(tiny, tmp_path / "in", db, 2)
    other = load_model(tiny_models["tiny-int8"], num_threads=1)
    assert other.spec.sha256 != tiny.spec.sha256
    with pytest.raises(ResumeModelError) as info:
        resume_folder(other, tmp_path / "in", db)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "cannot resume session 1" in message and "--model tiny-float32" in message
    assert "without --resume" in message
    assert rows(db, "SELECT id, stop_reason FROM sessions") == [(1, "error")] and rows(db, "SELECT COUNT(*) FROM cells") == [(2,)]
    assert resume_folder(tiny, tmp_path / "in", db).session_id == 1  # the same model still resumes it


def test_resume_with_the_same_network_under_another_lab_scope_is_refused(tiny, tmp_path, disc):
    """A scoped copy shares its network's sha256; resuming its source's session with it would mix two differentials."""
    from hematovision import load_model
    from hematovision.lab_scope import scope_model

    write_discs(tmp_path / "in", 5, disc)
    db = tmp_path / "station.sqlite"
    interrupted_folder_run(tiny, tmp_path / "in", db, 2)
    scoped = load_model(scope_model(tiny.spec.json_path, ["red", "green"], tmp_path / "lab", log=lambda _: None), num_threads=1)
    assert scoped.spec.sha256 == tiny.spec.sha256
    with pytest.raises(ResumeModelError) as info:
        resume_folder(scoped, tmp_path / "in", db)
    message = str(info.value)
    assert "it counted every class" in message and "counts red, green" in message and "without --resume" in message
    assert rows(db, "SELECT id, stop_reason FROM sessions") == [(1, "error")] and rows(db, "SELECT COUNT(*) FROM cells") == [(2,)]


def test_resume_with_nothing_to_resume_says_so(tiny, tmp_path, disc, caplog):
    config = StationConfig(db_path=tmp_path / "s.sqlite", mode="cell", summary_every=0, resume=True)
    for expected in ("it is empty", "ended normally (source ended)"):
        with caplog.at_level("WARNING", logger="hematovision.station.loop"), FakeSource([disc("red")]) as source:
            Station(tiny, config, printer=lambda _: None).run(source)
        assert "nothing to resume" in caplog.text and expected in caplog.text
        caplog.clear()


# --- 5. file names that are not UTF-8 -------------------------------------------------------------------------------


def _non_utf8_folder(folder: Path, disc) -> list[bytes]:
    folder.mkdir()
    names = [b"a_first.png", b"bad\xffname.png", b"c_\xe9t\xe9.png", b"d_last.png"]
    for i, name in enumerate(names):
        path = os.path.join(os.fsencode(folder), name)
        try:
            Image.fromarray(disc(("red", "green", "blue")[i % 3], seed=i)).save(os.fsdecode(path), format="PNG")
        except (OSError, UnicodeError):
            pytest.skip("this file system does not take non-UTF-8 file names")
        os.utime(path, ns=(10**18 + i * 10**9,) * 2)  # oldest first: the folder source's order
    return names


def test_non_utf8_file_names_are_logged_and_every_file_is_processed(tiny, tmp_path, disc):
    _non_utf8_folder(tmp_path / "in", disc)
    config = StationConfig(db_path=tmp_path / "s.sqlite", mode="cell", summary_every=0, source_name=f"folder:{tmp_path / 'in'}")
    with FolderSource(tmp_path / "in", watch=False, settle=0) as source:
        summary = Station(tiny, config, printer=lambda _: None).run(source)
    assert summary.stop_reason == "source ended" and summary.cells == 4
    names = [r[0] for r in rows(config.db_path, "SELECT source_frame FROM cells ORDER BY id")]
    assert names == ["a_first.png", "bad\\xffname.png", "c_\\xe9t\\xe9.png", "d_last.png"]
    assert rows(config.db_path, "SELECT COUNT(*) FROM frames WHERE status = 'classified'") == [(4,)]


def test_resume_skips_the_non_utf8_files_already_done(tiny, tmp_path, disc):
    _non_utf8_folder(tmp_path / "in", disc)
    db = tmp_path / "station.sqlite"
    interrupted_folder_run(tiny, tmp_path / "in", db, 3)
    summary = resume_folder(tiny, tmp_path / "in", db)
    assert summary.session_id == 1 and summary.cells == 4
    assert rows(db, "SELECT COUNT(DISTINCT source_frame), COUNT(*) FROM cells") == [(4, 4)]


def test_cli_station_reads_a_folder_with_a_non_utf8_file_name(tiny_models, tmp_path, disc, capsys):
    _non_utf8_folder(tmp_path / "in", disc)
    db = tmp_path / "s.sqlite"
    code, out, err = cli(capsys, "station", "--source", f"folder:{tmp_path / 'in'}", "--db", db, "--mode", "cell", "--no-watch",
                         "--model", tiny_models["tiny-int8"])
    assert code == 0 and "Traceback" not in err and "Differential: 4 cells" in out and "stopped: source ended" in out
    code, out, err = cli(capsys, "report", "--db", db, "--csv", tmp_path / "cells.csv")
    assert code == 0 and "bad\\xffname.png" in (tmp_path / "cells.csv").read_text(encoding="utf-8")


# --- 6. damaged databases -------------------------------------------------------------------------------------------


def _pages_overwritten(path: Path) -> None:
    """Every page but the first (the schema) overwritten with noise: the tables' data is gone, the file still opens."""
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    data[size:] = np.random.default_rng(0).integers(0, 256, len(data) - size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def _sql(*statements: str):
    def damage(path: Path) -> None:
        with sqlite3.connect(path, isolation_level=None) as con:
            for statement in statements:
                con.execute(statement)
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return damage


DAMAGES = {
    "data pages overwritten": (_pages_overwritten, ["report", "report-csv", "report-fhir", "list", "export", "set", "import", "station"]),
    "user_version -1": (_sql("PRAGMA user_version = -1"), ["report", "list", "export", "set", "import", "station"]),
    "no reviews table": (_sql("DROP TABLE reviews"), ["report", "report-csv", "list", "export", "set", "import", "station"]),
    "labels not JSON": (_sql("UPDATE sessions SET labels = 'garbage'"), ["report", "report-fhir", "set", "import", "station"]),
    "labels not a list": (_sql("UPDATE sessions SET labels = '{\"a\": 1}'"), ["report", "set", "station"]),
    "summary not JSON": (_sql("UPDATE sessions SET summary = '{oops'"), ["report"]),
    "counted classes not JSON": (_sql("UPDATE sessions SET counted = 'garbage'"), ["report", "report-fhir", "station"]),
    "counted classes not a list": (_sql("UPDATE sessions SET counted = '[1, 2]'"), ["report", "report-fhir"]),
}
COMMANDS = {
    "report": ["report"],
    "report-csv": ["report", "--csv", "{dir}/out.csv"],
    "report-fhir": ["report", "--fhir", "{dir}/out.csv"],
    "list": ["review", "--list"],
    "export": ["review", "--export", "{dir}/out.csv"],
    "set": ["review", "--set", "1", "lymphocyte", "--reviewer", "A"],
    "import": ["review", "--import", "{dir}/in.csv"],
}
CASES = [(damage, command) for damage, (_, commands) in DAMAGES.items() for command in commands if command != "station"]


@pytest.mark.parametrize("damage, command", CASES, ids=[f"{d}-{c}" for d, c in CASES])
def test_a_damaged_database_gives_one_clear_line_and_stays_as_it_was(db, tmp_path, capsys, damage, command):
    DAMAGES[damage][0](db)
    (tmp_path / "out.csv").write_text("an earlier export\n")
    (tmp_path / "in.csv").write_text("cell_id,label,reviewer\n1,lymphocyte,A\n")
    before = snapshot(tmp_path)
    argv = [a.format(dir=tmp_path) for a in COMMANDS[command]]
    code, out, err = cli(capsys, argv[0], "--db", db, *argv[1:])
    line = one_error_line(err)
    assert code == 1 and line.startswith("error: ") and "damaged database" in line and "backup" in line, line
    assert snapshot(tmp_path) == before  # the database and the earlier export untouched, no temporary file left


@pytest.mark.parametrize("damage", [d for d, (_, commands) in DAMAGES.items() if "station" in commands])
def test_the_station_refuses_a_damaged_database_before_writing(tiny, db, tmp_path, disc, damage):
    DAMAGES[damage][0](db)
    before = db.read_bytes()
    config = StationConfig(db_path=db, mode="cell", summary_every=0)
    with pytest.raises(CorruptDatabaseError, match="damaged database") as info, FakeSource([disc("red")]) as source:
        Station(tiny, config, printer=lambda _: None).run(source)
    assert isinstance(info.value, StationLogError) and isinstance(info.value, OSError)
    assert db.read_bytes() == before


def test_cli_station_on_a_damaged_database_says_so_in_one_line(tiny_models, db, tmp_path, disc, capsys):
    _pages_overwritten(db)
    before = db.read_bytes()
    write_discs(tmp_path / "in", 2, disc)
    code, out, err = cli(capsys, "station", "--source", f"folder:{tmp_path / 'in'}", "--db", db, "--mode", "cell", "--no-watch",
                         "--model", tiny_models["tiny-int8"])
    assert code == 1 and "damaged database" in one_error_line(err) and db.read_bytes() == before


# --- 7. ids too large for SQLite ------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, status, words", [
    (["review", "--set", HUGE, "basophil", "--reviewer", "A"], 2, "too large"),
    (["review", "--set", "²", "basophil", "--reviewer", "A"], 2, "not a whole number"),
    (["report", "--session", HUGE], 2, "too large"),
    (["report", "--session", "²"], 2, "not a whole number"),
    (["review", "--list", "--session", HUGE], 2, "too large"),
    (["review", "--export", "{dir}/out.csv", "--session", HUGE], 2, "too large"),
    (["review", "--import", "{dir}/huge.csv"], 1, f"no cell {HUGE}"),
    (["review", "--set", str(2**63 - 1), "basophil", "--reviewer", "A"], 1, f"no cell {2**63 - 1}"),
], ids=["set", "set-superscript", "report-session", "report-session-superscript", "list-session", "export-session", "import",
        "set-largest"])
def test_ids_too_large_for_sqlite_are_clear_errors(db, tmp_path, capsys, argv, status, words):
    (tmp_path / "huge.csv").write_text(f"cell_id,label,reviewer\n1,basophil,A\n{HUGE},basophil,A\n")
    code, out, err = cli(capsys, argv[0], "--db", db, *(a.format(dir=tmp_path) for a in argv[1:]))
    assert code == status and words in one_error_line(err)
    assert rows(db, "SELECT COUNT(*) FROM reviews") == [(0,)] and not (tmp_path / "out.csv").exists()


def test_the_log_answers_no_such_row_for_ids_sqlite_cannot_hold(db):
    with StationLog(db, create=False) as log:
        for bad in (0, -1, 2**63, 10**30):
            assert log.cell(bad) is None
            with pytest.raises(StationLogError, match=f"no session {bad}"):
                log.session(bad)


# --- 8. a report into a folder ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--fhir", "--csv"])
def test_a_report_into_a_folder_fails_and_leaves_no_temporary_file(db, tmp_path, capsys, option):
    out = tmp_path / "reports"
    out.mkdir()
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "report", "--db", db, option, out)
    assert code == 1 and "is a folder" in one_error_line(err)
    assert snapshot(tmp_path) == before and list(out.iterdir()) == []


def test_a_csv_report_that_fails_half_way_keeps_the_earlier_file(tmp_path):
    from hematovision.commands.report import _write_csv

    out = tmp_path / "cells.csv"
    out.write_text("an earlier export\n")

    def cells():
        yield {"id": 1}
        raise CorruptDatabaseError("damaged half-way")

    with pytest.raises(CorruptDatabaseError):
        _write_csv(out, ("id",), cells())
    assert out.read_text() == "an earlier export\n" and [p.name for p in tmp_path.iterdir()] == ["cells.csv"]
