"""Reviews as CSV: export every cell with its latest review (a worksheet), import verified labels from one.

Import format: ``cell_id,label,reviewer[,note]``, with or without that header
line (an exported file works too: its first four columns are these). A row
whose label and reviewer are both blank is a cell not reviewed yet and is
skipped; a row equal to the cell's latest review (label, reviewer, note) is
skipped as unchanged, so importing the same file twice adds nothing. Every row
is checked before anything is written; then all are written in one transaction.

Exported text that a spreadsheet would run as a formula is escaped with a
leading ' (:func:`hematovision.station.report.escape_formula`) and unescaped on import.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .report import escape_formula, replacing, unescape_formula
from .review import ReviewError, ReviewInput, add_reviews, cell_reviews, latest_reviews
from .log import StationLog

EXPORT_COLUMNS = ("cell_id", "label", "reviewer", "note", "reviewed_at", "reviews", "model_label", "confidence", "uncertain",
                  "out_of_distribution", "session_id", "source_frame", "crop_path")
IMPORT_COLUMNS = ("cell_id", "label", "reviewer", "note")
MAX_ROWS = 1_000_000


class ReviewCsvError(ReviewError):
    """The review CSV cannot be read or has a malformed row; nothing was written."""


@dataclass(frozen=True)
class ImportResult:
    written: int
    unchanged: int
    blank: int


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return escape_formula(str(value))


def write_reviews_csv(db: StationLog, path: str | os.PathLike, *, session_ids: Sequence[int] | None = None) -> int:
    """One row per cell (all sessions, or these): its latest review (blank if none) and the model's result. Returns rows."""
    path = Path(path)
    rows = cell_reviews(db, session_ids)
    counts = dict(db.query("SELECT cell_id, COUNT(*) FROM reviews GROUP BY cell_id"))
    with replacing(path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(EXPORT_COLUMNS)
        for row in rows:
            c, r = row.cell, row.review
            writer.writerow([_cell(v) for v in (
                c["id"], r.label if r else None, r.reviewer if r else None, r.note if r else None, r.time if r else None,
                counts.get(c["id"], 0), c["label"], c["confidence"], c["uncertain"], c["out_of_distribution"], c["session_id"],
                c["source_frame"], c["crop_path"])])
    return len(rows)


def read_reviews_csv(path: str | os.PathLike) -> list[ReviewInput]:
    """Parse an import file into reviews to record (blank rows kept: :func:`import_reviews` counts them)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            table = list(csv.reader(fh))
    except FileNotFoundError:
        raise ReviewCsvError(f"{path}: no such file; pass the CSV to import (cell_id,label,reviewer[,note]).") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReviewCsvError(f"{path}: cannot read it as UTF-8 CSV ({exc}); save it as CSV UTF-8 and try again.") from exc
    if table and [h.strip().lower() for h in table[0][:3]] == list(IMPORT_COLUMNS[:3]):
        table = table[1:]
        first = 2
    else:
        first = 1
    if len(table) > MAX_ROWS:
        raise ReviewCsvError(f"{path}: {len(table)} rows, more than {MAX_ROWS}; split the file.")
    items = []
    for n, row in enumerate(table, start=first):
        if not any(v.strip() for v in row):
            continue
        items.append(_parse_row(row, f"{path.name} line {n}"))
    return items


def _parse_row(row: list[str], where: str) -> ReviewInput:
    if len(row) < 3:
        raise ReviewCsvError(f"{where}: {len(row)} column(s); expected cell_id,label,reviewer[,note].")
    cell, label, reviewer = (unescape_formula(v.strip()) for v in row[:3])
    note = unescape_formula(row[3].strip()) if len(row) > 3 else ""
    try:
        cell_id = int(cell)
    except ValueError:
        raise ReviewCsvError(f"{where}: cell_id {cell!r} is not a number; the first column is the cell id from "
                             "`review --list` or `--export`.") from None
    return ReviewInput(cell_id=cell_id, label=label, reviewer=reviewer, note=note, where=where)


def import_reviews(db: StationLog, path: str | os.PathLike) -> ImportResult:
    """Read ``path`` and record its new reviews in one transaction (all or none)."""
    items = read_reviews_csv(path)
    blank = [i for i in items if not i.label and not i.reviewer]
    latest = latest_reviews(db)
    todo, unchanged = [], 0
    for item in (i for i in items if i.label or i.reviewer):
        last = latest.get(item.cell_id)
        if last is not None and (last.label, last.reviewer, last.note) == (item.label, item.reviewer.strip(), item.note):
            unchanged += 1
        else:
            todo.append(item)
    written = add_reviews(db, todo) if todo else []
    return ImportResult(written=len(written), unchanged=unchanged, blank=len(blank))
