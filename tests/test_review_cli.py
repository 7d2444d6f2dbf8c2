"""`python -m hematovision review` (list, set, import, export), the review CSV, `adapt --db` on the verified cells,
and the review modules' light imports."""

import csv
import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from hematovision.__main__ import main
from hematovision.station.review import InvalidLabelError, add_review, cell_reviews, latest_reviews
from hematovision.station.reviewcsv import ReviewCsvError, import_reviews, write_reviews_csv
from hematovision.station.log import StationLog
from tests.conftest import ROOT
from tests.test_review import BAD_FILES, count_reviews, make_db, station_db  # noqa: F401 - station_db: the shared fixture


# --- the CLI ------------------------------------------------------------------------------------------------------------


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["review", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", [
    (["--set", "1", "neutrophill", "--reviewer", "A"], "unknown label 'neutrophill'"),
    (["--set", "404", "neutrophil", "--reviewer", "A"], "no cell 404"),
    (["--set", "1", "neutrophil", "--reviewer", ""], "reviewer name is empty"),
    (["--set", "1", "other", "--reviewer", "A"], "needs a note"),
])
def test_cli_refuses_bad_input_with_one_line_and_writes_nothing(station_db, capsys, argv, message):
    code, out, err = cli(capsys, "--db", station_db, *argv)
    assert code == 1 and out == "" and message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert count_reviews(station_db) == 0


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_cli_refuses_a_bad_database_file(tmp_path, capsys, kind):
    path = tmp_path / "x.sqlite"
    BAD_FILES[kind][0](path)
    before = path.read_bytes()
    code, out, err = cli(capsys, "--db", path, "--set", "1", "neutrophil", "--reviewer", "A")
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert path.read_bytes() == before


def test_cli_refuses_to_write_to_a_database_with_a_damaged_page(tmp_path, capsys):
    path = tmp_path / "station.sqlite"
    make_db(path, ["neutrophil"] * 200)
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    data[3 * size + 100:4 * size] = np.random.default_rng(0).integers(0, 256, size - 100, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    code, out, err = cli(capsys, "--db", path, "--set", "1", "lymphocyte", "--reviewer", "A")
    assert code == 1 and "damaged database" in err and "nothing written" in err and err.count("\n") == 1
    assert path.read_bytes() == bytes(data)


def test_cli_set_list_export_import_round_trip(station_db, capsys, tmp_path):
    code, out, _ = cli(capsys, "--db", station_db, "--set", "2", "lymphocyte", "--reviewer", "A. Smith", "--note", "=HYPERLINK(1)")
    assert code == 0 and "corrected from neutrophil" in out
    code, out, _ = cli(capsys, "--db", station_db, "--list", "--uncertain")
    assert code == 0 and out.count("\n") == 3 and " monocyte " in out and "0 of 1 flagged cells verified" in out
    code, out, _ = cli(capsys, "--db", station_db, "--list", "--unverified")
    assert "1 of 6 cells verified" in out and out.count("\n") == 7
    export = tmp_path / "reviews.csv"
    assert cli(capsys, "--db", station_db, "--export", export)[0] == 0
    rows = list(csv.DictReader(export.open(encoding="utf-8")))
    assert len(rows) == 6 and rows[1]["label"] == "lymphocyte" and rows[1]["note"] == "'=HYPERLINK(1)"  # defused
    assert rows[0]["label"] == "" and rows[1]["model_label"] == "neutrophil"
    rows[0].update(label="neutrophil", reviewer="B. Jones")  # the technologist fills in the worksheet
    with export.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code, out, _ = cli(capsys, "--db", station_db, "--import", export)
    assert code == 0 and "1 review(s) recorded, 1 unchanged, 4 blank" in out  # row 2 came back unescaped: unchanged
    assert cli(capsys, "--db", station_db, "--import", export)[1].startswith(f"{export}: 0 review(s) recorded, 2 unchanged")
    with StationLog(station_db) as db:
        assert {k: r.label for k, r in latest_reviews(db).items()} == {1: "neutrophil", 2: "lymphocyte"}


def test_import_is_all_or_nothing(station_db, tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("cell_id,label,reviewer,note\n1,neutrophil,A,\n2,lymphocyte,A,\n3,basophill,A,\n", encoding="utf-8")
    with StationLog(station_db) as db, pytest.raises(InvalidLabelError, match="in.csv line 4: unknown label 'basophill'"):
        import_reviews(db, path)
    path.write_text("1,neutrophil,A\nx,neutrophil,A\n", encoding="utf-8")
    with StationLog(station_db) as db, pytest.raises(ReviewCsvError, match="line 2: cell_id 'x' is not a number"):
        import_reviews(db, path)
    assert count_reviews(station_db) == 0
    path.write_text("1,neutrophil,A\n5,other,A,a megakaryocyte fragment\n", encoding="utf-8")  # no header: fine too
    with StationLog(station_db) as db:
        assert import_reviews(db, path).written == 2
        assert [r.review.note for r in cell_reviews(db) if r.review][1] == "a megakaryocyte fragment"


def test_export_writes_every_cell_even_unreviewed(station_db, tmp_path):
    with StationLog(station_db) as db:
        assert write_reviews_csv(db, tmp_path / "r.csv") == 6
    assert (tmp_path / "r.csv").read_text(encoding="utf-8").splitlines()[0].startswith("cell_id,label,reviewer,note,")


# --- adapt from the verified cells ------------------------------------------------------------------------------------


def test_adapt_uses_only_verified_cells_with_a_model_class(tiny_models, tmp_path, disc, capsys):
    from hematovision import load_model
    from hematovision.station.sources import FakeSource
    from hematovision.station.loop import Station, StationConfig

    truth = ["red", "green", "blue"] * 4 + ["red"]
    config = StationConfig(db_path=tmp_path / "station.sqlite", mode="cell", summary_every=0)
    with FakeSource([disc(lb, seed=i) for i, lb in enumerate(truth)]) as source:
        Station(load_model(tiny_models["tiny-float32"], num_threads=1), config, printer=lambda _: None).run(source)
    with StationLog(config.db_path) as db:
        for cell_id, label in enumerate(truth[:12], start=1):  # cell 13 stays unverified
            add_review(db, cell_id=cell_id, label="smudge" if cell_id == 12 else label, reviewer="A")
    out = tmp_path / "adapted"
    code = main(["adapt", "--model", str(tiny_models["tiny-float32"]), "--db", str(config.db_path), "--out", str(out), "--name", "lab"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    meta = json.loads((out / "lab.json").read_text())
    used = meta["adaptation"]["cells"]["from_station_db"]
    assert used["cell_ids"] == list(range(1, 12)) and len(used["review_ids"]) == 11
    assert meta["adaptation"]["cells"]["count_per_class"] == {"red": 4, "green": 4, "blue": 3}
    assert "cross_validation" in meta["adaptation"] and load_model(out / "lab.json").labels == ("red", "green", "blue")


def test_adapt_from_a_database_without_verified_cells_says_what_to_do(tiny_models, station_db, tmp_path, capsys):
    code = main(["adapt", "--model", str(tiny_models["tiny-float32"]), "--db", str(station_db), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "review" in err and "verify cells first" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("module", ["hematovision.station.review", "hematovision.station.reviewcsv", "hematovision.station.fhir", "hematovision.station.schema",
                                    "hematovision.commands.review"])
def test_review_modules_import_only_the_edge_core(module):
    heavy = {"tensorflow", "keras", "gradio", "open3d", "huggingface_hub", "skimage", "matplotlib", "torch", "fhir", "pydantic",
             "pandas", "scipy"}
    code = (f"import importlib, json, sys; importlib.import_module({module!r}); "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not set(json.loads(r.stdout)) & heavy and "hematovision" in json.loads(r.stdout)


@pytest.mark.parametrize("probabilities, flag", [
    ({"ig": 0.6, "neutrophil": 0.3, "monocyte": 0.1}, "unc,1st=ig"),  # a scoped model's cell: its first choice shown
    ({"neutrophil": 0.6, "ig": 0.3, "monocyte": 0.1}, "unc "),  # the label is the first choice
    ({"neutrophil": 0.45, "ig": 0.45, "monocyte": 0.1}, "unc "),  # a tie after rounding is not another first choice
])
def test_list_shows_a_first_choice_outside_the_scope(tmp_path, capsys, probabilities, flag):
    from types import SimpleNamespace

    from tests.test_review import WBC

    path = tmp_path / "station.sqlite"
    (tmp_path / "crops").mkdir()
    with StationLog(path) as db:
        s = db.open_session(model_name="wbc-5part", model_sha256="a" * 64, labels=WBC, source="folder:in", mode="cell")
        crop = SimpleNamespace(image=np.full((24, 24, 3), 90, np.uint8), box=(0, 0, 24, 24))
        pred = SimpleNamespace(label="neutrophil", confidence=probabilities["neutrophil"], uncertain=True,
                               probabilities=probabilities, model="wbc-5part", out_of_distribution=False, atypical=None)
        db.add_cell(s.id, frame=SimpleNamespace(index=0, name="f.png"), index_in_frame=0, crop=crop, prediction=pred,
                    model_sha256="a" * 64, crops_dir=tmp_path / "crops")
        db.close_session(s.id, stop_reason="source ended")
    code, out, _ = cli(capsys, "--db", path, "--list")
    row = out.splitlines()[1]
    assert code == 0 and " neutrophil " in row and flag in row
