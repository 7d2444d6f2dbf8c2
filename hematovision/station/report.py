"""Batch reports: one row per classified file, the differential count, and CSV.

Numpy-free and stdlib-only, so the app, the CLI and the microscope station can
share it. The differential count itself
(a manual 100-cell differential: the percentage of each class among the
counted cells) is :class:`hematovision.station.differential.Differential`; here every
successfully classified file counts once, under its predicted label, and
files that could not be read are listed but not counted.
"""

from __future__ import annotations

import csv
import io
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

from .differential import Differential

#: Columns of the per-file table and of the CSV, in order.
COLUMNS = ("file", "label", "confidence", "uncertain", "error")
#: Columns of the differential table.
DIFFERENTIAL_COLUMNS = ("class", "count", "percent")

#: Spreadsheet programs run a cell that starts with one of these as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_PREFIXES = FORMULA_PREFIXES


@dataclass(frozen=True)
class BatchRow:
    """The result for one file: a prediction, or the error that stopped it."""

    file: str
    label: str | None = None
    confidence: float | None = None
    uncertain: bool | None = None
    error: str | None = None

    @classmethod
    def from_prediction(cls, file: str, prediction) -> "BatchRow":
        """Build a row from a :class:`hematovision.Prediction` (or anything with the same fields)."""
        return cls(file=file, label=prediction.label, confidence=float(prediction.confidence), uncertain=bool(prediction.uncertain))

    @classmethod
    def failed(cls, file: str, error: str | BaseException) -> "BatchRow":
        return cls(file=file, error=str(error))

    @property
    def ok(self) -> bool:
        return self.error is None

    def values(self) -> list:
        """The row as a list in :data:`COLUMNS` order (None for missing values)."""
        return [self.file, self.label, self.confidence, self.uncertain, self.error]


def differential(rows: Iterable[BatchRow], labels: Sequence[str]) -> Differential:
    """The differential count of the successfully classified rows (failed rows are not counted).

    ``labels`` are the model's classes, so every class is listed, zeros included.
    """
    return Differential.from_rows(labels, ((r.label, bool(r.uncertain)) for r in rows if r.ok))


def differential_rows(diff: Differential) -> list[list]:
    """The differential as table rows in :data:`DIFFERENTIAL_COLUMNS` order, percentages to 0.1."""
    pct = diff.percentages()
    return [[label, diff.counts[label], round(pct[label], 1)] for label in diff.labels]


def _safe_cell(value) -> str:
    """CSV text for a value; text that a spreadsheet would run as a formula is quoted with a leading '."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return escape_formula(str(value))


def escape_formula(text: str) -> str:
    """Text a spreadsheet would run as a formula gets a leading ' (shown, not run); other text is unchanged."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def unescape_formula(text: str) -> str:
    """Undo :func:`escape_formula` (for CSV files written by HematoVision and read back)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_PREFIXES) else text


def to_csv(rows: Iterable[BatchRow]) -> str:
    """The rows as CSV text with a header line (confidence with 4 decimals, uncertain as yes/no)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_safe_cell(v) for v in row.values()])
    return buf.getvalue()


def write_csv(rows: Iterable[BatchRow], path: str | os.PathLike) -> Path:
    """Write :func:`to_csv` to ``path`` (UTF-8) and return it as a Path."""
    path = Path(path)
    path.write_text(to_csv(rows), encoding="utf-8", newline="")
    return path


@contextmanager
def replacing(path: str | os.PathLike, *, newline: str | None = None) -> Iterator[IO[str]]:
    """Write UTF-8 text to ``path`` through a temporary file beside it, renamed over ``path`` once all is written.

    A failure half-way (a damaged database, a full disk) leaves an existing ``path`` as it was and no temporary
    file behind. A path that exists but is not a regular file (``/dev/stdout``, a pipe) is written directly.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; pass a file name for the output (e.g. {path / 'report.csv'}).")
    if path.exists() and not path.is_file():
        with open(path, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
