import csv
import io
from types import SimpleNamespace

import pytest

from hematovision.station.report import COLUMNS, BatchRow, differential, differential_rows, to_csv, write_csv

CLASSES = ("lymphocyte", "monocyte", "neutrophil")


def rows(labels, uncertain=()):
    return [BatchRow(f"{i}.jpg", label, 0.9, i in uncertain) for i, label in enumerate(labels)]


def test_differential_lists_every_class_in_order_and_sums_to_100():
    diff = differential(rows(["neutrophil"] * 3 + ["lymphocyte"]), CLASSES)
    assert differential_rows(diff) == [["lymphocyte", 1, 25.0], ["monocyte", 0, 0.0], ["neutrophil", 3, 75.0]]
    assert sum(diff.percentages().values()) == pytest.approx(100.0)


def test_differential_of_100_cells_reads_like_a_manual_count():
    diff = differential(rows(["neutrophil"] * 60 + ["lymphocyte"] * 30 + ["monocyte"] * 10, uncertain={0, 99}), CLASSES)
    assert diff.percentages() == {"lymphocyte": 30.0, "monocyte": 10.0, "neutrophil": 60.0}
    assert diff.total == 100 and diff.uncertain == 2


def test_differential_empty_is_all_zero():
    assert differential_rows(differential([], CLASSES)) == [[c, 0, 0.0] for c in CLASSES]


def test_rows_from_predictions_and_failures():
    pred = SimpleNamespace(label="monocyte", confidence=0.91234567, uncertain=False)
    ok = BatchRow.from_prediction("a.jpg", pred)
    bad = BatchRow.failed("b.txt", ValueError("b.txt: not a readable image"))
    assert ok.ok and not bad.ok
    assert ok.values() == ["a.jpg", "monocyte", pytest.approx(0.91234567), False, None]
    assert bad.values() == ["b.txt", None, None, None, "b.txt: not a readable image"]
    # Failed files are listed but not counted.
    diff = differential([ok, bad], CLASSES)
    assert diff.total == 1 and diff.percentages()["monocyte"] == 100.0


def test_csv_round_trips_and_neutralises_formulas(tmp_path):
    rows = [
        BatchRow("cell 1.jpg", "neutrophil", 0.5, True),
        BatchRow("=HYPERLINK(\"x\").png", "monocyte", 0.98765, False),
        BatchRow.failed("broken, \"quoted\".jpg", "corrupt"),
    ]
    path = write_csv(rows, tmp_path / "out.csv")
    parsed = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert parsed[0] == list(COLUMNS)
    assert parsed[1] == ["cell 1.jpg", "neutrophil", "0.5000", "yes", ""]
    assert parsed[2][0].startswith("'=") and parsed[2][2:4] == ["0.9877", "no"]
    assert parsed[3] == ["broken, \"quoted\".jpg", "", "", "", "corrupt"]
    assert to_csv([]) == ",".join(COLUMNS) + "\n"
