"""`review --export-cells DIR`: a station's verified cells as a labelled folder that adapt, the cross-lab report and
the few-shot protocol read, with each file's provenance in labels.csv; never over existing files."""

import csv
import hashlib

import pytest

from hematovision.adapt import scan_cells
from hematovision.station.log import StationLog
from hematovision.station.review import add_review
from tests.test_review import station_db  # noqa: F401 - the shared fixture: 6 cells, one session
from tests.test_review_cli import cli

WBC = ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet")


def review(db_path, *pairs):
    with StationLog(db_path, create=False) as db:
        for cell_id, label in pairs:
            add_review(db, cell_id=cell_id, label=label, reviewer="A. Tech")


def test_verified_cells_become_a_labelled_folder_with_their_provenance(station_db, tmp_path, capsys):
    # cells 1-6: neutrophil, neutrophil, lymphocyte, monocyte, eosinophil, platelet (model labels)
    review(station_db, (1, "neutrophil"), (2, "ig"), (3, "lymphocyte"), (4, "smudge"), (3, "monocyte"))
    dest = tmp_path / "lab-cells"
    code, out, err = cli(capsys, "--db", station_db, "--export-cells", dest)
    assert code == 0, err
    assert out.strip() == f"wrote 3 verified cells to {dest}/<label>/ (neutrophil 1, ig 1, monocyte 1) and {dest}/labels.csv"
    # The latest review wins (cell 3 -> monocyte); smudge and unreviewed cells are not cell types to learn from.
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == ["ig/cell-0000002.jpg", "labels.csv", "monocyte/cell-0000003.jpg", "neutrophil/cell-0000001.jpg"]
    rows = list(csv.DictReader(open(dest / "labels.csv", encoding="utf-8")))
    assert [(r["file"], r["label"], r["cell_id"], r["model_label"], r["reviewer"]) for r in rows] == [
        ("neutrophil/cell-0000001.jpg", "neutrophil", "1", "neutrophil", "A. Tech"),
        ("ig/cell-0000002.jpg", "ig", "2", "neutrophil", "A. Tech"),
        ("monocyte/cell-0000003.jpg", "monocyte", "3", "lymphocyte", "A. Tech")]
    assert all(hashlib.sha256((dest / r["file"]).read_bytes()).hexdigest() == r["sha256"] for r in rows)
    # What adapt (and so training.fewshot and training.crosslab) reads from it.
    assert {k: [p.name for p in v] for k, v in scan_cells(dest, WBC).items()} == {
        "ig": ["cell-0000002.jpg"], "monocyte": ["cell-0000003.jpg"], "neutrophil": ["cell-0000001.jpg"]}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".lab-cells")]  # no staging folder left


def test_an_empty_existing_folder_is_used(station_db, tmp_path, capsys):
    review(station_db, (1, "neutrophil"))
    dest = tmp_path / "empty"
    dest.mkdir()
    code, out, err = cli(capsys, "--db", station_db, "--export-cells", dest)
    assert code == 0 and (dest / "neutrophil" / "cell-0000001.jpg").is_file()


@pytest.mark.parametrize("existing", ["file-inside", "a-file"])
def test_existing_files_are_never_replaced(station_db, tmp_path, capsys, existing):
    review(station_db, (1, "neutrophil"))
    dest = tmp_path / "lab-cells"
    if existing == "a-file":
        dest.write_text("keep me")
    else:
        (dest / "neutrophil").mkdir(parents=True)
        (dest / "neutrophil" / "cell-0000001.jpg").write_text("keep me")
    code, out, err = cli(capsys, "--db", station_db, "--export-cells", dest)
    assert code == 1 and err.startswith("error: ") and "choose a new" in err and "Traceback" not in err
    kept = dest if existing == "a-file" else dest / "neutrophil" / "cell-0000001.jpg"
    assert kept.read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".lab-cells")]


def test_no_verified_cell_is_an_error_that_says_what_to_do(station_db, tmp_path, capsys):
    review(station_db, (1, "smudge"))
    dest = tmp_path / "lab-cells"
    code, out, err = cli(capsys, "--db", station_db, "--export-cells", dest)
    assert code == 1 and "no verified cells with one of the model's classes" in err and "--set CELL_ID LABEL" in err
    assert not dest.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".lab-cells")]


def test_a_missing_crop_is_left_out_and_said_so(station_db, tmp_path, capsys):
    review(station_db, (1, "neutrophil"), (2, "neutrophil"))
    with StationLog(station_db, create=False) as db:
        crop = db.cell(2)["crop_path"]
    (station_db.parent / crop).unlink()
    code, out, err = cli(capsys, "--db", station_db, "--export-cells", tmp_path / "cells")
    assert code == 0 and "wrote 1 verified cells" in out and "left out: cell 2: crop" in err and "is missing" in err


def test_sessions_can_be_chosen(station_db, tmp_path, capsys):
    review(station_db, (1, "neutrophil"))
    code, out, err = cli(capsys, "--db", station_db, "--export-cells", tmp_path / "c", "--session", "9")
    assert code == 1 and "no session 9" in err and not (tmp_path / "c").exists()


def test_verified_cells_without_any_crop_file_say_where_crops_must_be(station_db, tmp_path, capsys):
    review(station_db, (1, "neutrophil"), (3, "lymphocyte"))
    for crop in (station_db.parent / "crops").rglob("*.jpg"):
        crop.unlink()
    code, out, err = cli(capsys, "--db", station_db, "--export-cells", tmp_path / "cells")
    assert code == 1 and "the crop files of the verified cells are missing (cell 1: crop" in err and ", ...)" in err
    assert "beside the station's crops folder" in err and not (tmp_path / "cells").exists()
