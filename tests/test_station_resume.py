"""`station --resume` is keyed on the source and on each file's content (sha256): another folder is refused with
what to do, the same folder however spelled resumes, and a file replaced under the same name is classified again."""

import subprocess
from pathlib import Path

import pytest
from PIL import Image

from hematovision import load_model
from hematovision.station.sources import FolderSource
from hematovision.errors import SourceError
from hematovision.station.loop import Station, StationConfig
from hematovision.station.log import ResumeSourceError
from tests.conftest import ROOT
from tests.test_station import rows, station_cmd, tiny, write_discs  # noqa: F401 - tiny: the shared fixture


def interrupted_folder_run(clf, folder, db: Path, frames: int) -> None:
    """A station reading ``folder`` that fails after ``frames`` frames (like a camera error): the session stays resumable."""
    done = []

    def fail_after():
        if len(done) >= frames:
            raise SourceError("scanner disconnected")
        done.append(1)

    config = StationConfig(db_path=db, mode="cell", summary_every=0, source_name=f"folder:{folder}")
    with pytest.raises(SourceError), FolderSource(folder, watch=False, settle=0) as source:
        Station(clf, config).run(source, should_stop=fail_after)


def resume_folder(clf, folder, db: Path):
    config = StationConfig(db_path=db, mode="cell", summary_every=0, source_name=f"folder:{folder}", resume=True)
    with FolderSource(folder, watch=False, settle=0) as source:
        return Station(clf, config).run(source)


def test_resume_refuses_a_session_of_another_source(tiny, tmp_path, disc):
    write_discs(tmp_path / "a", 6, disc)
    write_discs(tmp_path / "b", 6, disc)
    db = tmp_path / "station.sqlite"
    interrupted_folder_run(tiny, tmp_path / "a", db, 3)
    with pytest.raises(ResumeSourceError) as info:
        resume_folder(tiny, tmp_path / "b", db)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and f"--source folder:{tmp_path / 'a'}" in message and "without --resume" in message
    assert rows(db, "SELECT COUNT(*) FROM cells") == [(3,)]
    assert rows(db, "SELECT id, stop_reason FROM sessions") == [(1, "error")]  # untouched: still resumable


def test_resume_accepts_the_same_folder_however_it_is_spelled(tiny, tmp_path, disc, monkeypatch):
    write_discs(tmp_path / "in", 5, disc)
    db = tmp_path / "station.sqlite"
    interrupted_folder_run(tiny, tmp_path / "in", db, 2)
    monkeypatch.chdir(tmp_path)
    summary = resume_folder(tiny, Path("in"), db)
    assert summary.session_id == 1 and summary.cells == 5
    assert rows(db, "SELECT COUNT(DISTINCT source_frame), COUNT(*) FROM cells") == [(5, 5)]


def test_resume_classifies_a_file_replaced_under_the_same_name(tiny, tmp_path, disc):
    folder = tmp_path / "in"
    labels = write_discs(folder, 6, disc)  # red, green, blue, red, green, blue
    db = tmp_path / "station.sqlite"
    interrupted_folder_run(tiny, folder, db, 3)
    done = dict(rows(db, "SELECT source_frame, source_sha256 FROM cells"))
    assert sorted(done) == ["cell_0000.png", "cell_0001.png", "cell_0002.png"] and all(len(v) == 64 for v in done.values())
    Image.fromarray(disc("blue", seed=77)).save(folder / "cell_0001.png")  # another cell, same name
    summary = resume_folder(tiny, folder, db)
    assert summary.session_id == 1 and summary.cells == 3 + 4
    got = rows(db, "SELECT source_frame, label, source_sha256 FROM cells WHERE source_frame = 'cell_0001.png' ORDER BY id")
    assert [g[1] for g in got] == [labels[1], "blue"] and got[0][2] != got[1][2]
    assert rows(db, "SELECT COUNT(*) FROM cells WHERE source_frame IN ('cell_0000.png', 'cell_0002.png')") == [(2,)]


def test_cli_resume_with_another_folder_fails_with_what_to_do(tiny_models, tmp_path, disc):
    write_discs(tmp_path / "a", 4, disc)
    write_discs(tmp_path / "b", 4, disc)
    db = tmp_path / "station.sqlite"
    interrupted_folder_run(load_model(tiny_models["tiny-int8"], num_threads=1), tmp_path / "a", db, 2)
    r = subprocess.run(station_cmd(tiny_models["tiny-int8"], tmp_path / "b", db, "--resume", "--no-watch"), capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 1 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "cannot resume session 1" in errors[0] and "without --resume" in errors[0]
    assert rows(db, "SELECT COUNT(*) FROM cells") == [(2,)]
