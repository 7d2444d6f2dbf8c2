"""The archive's Parquet dataset: its schema, its part files, and what it already holds (resume).

OUT.parquet is a folder of part files with one schema (:func:`schema`), written
by either engine; a part file is written under a hidden name and renamed when
complete, so a crash leaves no half file. pyarrow is imported only here, inside
functions (it is the ``scale`` extra, not part of the edge install).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import HematoVisionError, MissingDependencyError


class ArchiveError(HematoVisionError, ValueError):
    """The archive's input or output cannot be used (not a folder, written by another model...)."""


@dataclass(frozen=True)
class ModelId:
    name: str
    sha256: str


def pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401 - the submodule is used through the package
    except ImportError as exc:
        raise MissingDependencyError("archive writes Parquet with pyarrow, which is not installed; "
                                     "run `pip install .[scale]` (or `pip install pyarrow`).") from exc
    return pyarrow


def schema(pa):
    return pa.schema([("path", pa.string()), ("label", pa.string()), ("confidence", pa.float64()),
                      ("probabilities", pa.map_(pa.string(), pa.float64())), ("uncertain", pa.bool_()),
                      ("ood", pa.bool_()), ("ood_score", pa.float64()), ("model", pa.string()),
                      ("model_sha256", pa.string()), ("error", pa.string())])


def record(row: dict, model: ModelId) -> dict:
    """A classify-style row (:func:`hematovision.commands._pool.classify_bytes`) -> one archive record.

    Its path and error are valid UTF-8 (Parquet strings must be): a non-UTF-8 file name is stored as
    :func:`~hematovision.commands._pool.printable` writes it, as ``classify`` prints it.
    """
    from ._pool import printable

    error = row.get("error")
    return {"path": printable(str(row["path"])), "label": row.get("label"), "confidence": row.get("confidence"),
            "probabilities": row.get("probabilities"), "uncertain": row.get("uncertain"),
            "ood": row.get("out_of_distribution"), "ood_score": row.get("ood_score"), "model": model.name,
            "model_sha256": model.sha256, "error": None if error is None else printable(str(error))}


def table(rows: list[dict], model: ModelId, *, pa):
    return pa.Table.from_pylist([record(r, model) for r in rows], schema=schema(pa))


def part_files(output: Path) -> list[Path]:
    """The dataset's part files (hidden and ``_``-prefixed names are not data, as for pyarrow and Spark)."""
    if not output.is_dir():
        return []
    return sorted(p for p in output.rglob("*.parquet") if p.is_file() and not p.name.startswith((".", "_")))


def read_column_pairs(output: Path, columns: list[str]) -> list[tuple]:
    """Rows of ``columns`` from every readable part file; an unreadable one is renamed ``_unreadable-*`` and reported."""
    pa = pyarrow()
    rows: list[tuple] = []
    for part in part_files(output):
        try:
            t = pa.parquet.read_table(part, columns=columns)
        except (pa.ArrowException, OSError) as exc:
            aside = part.with_name(f"_unreadable-{part.name}")
            os.replace(part, aside)
            print(f"warning: {part} is not a readable Parquet file ({exc}); moved to {aside.name}, "
                  "its files will be classified again.", file=sys.stderr)
            continue
        rows.extend(zip(*(t.column(c).to_pylist() for c in columns)))
    return rows


def done_paths(output: Path, model: ModelId) -> set[str]:
    """Paths already in ``output`` (the resume set); refuses an output written with another model."""
    if output.exists() and not output.is_dir():
        raise ArchiveError(f"{output}: is a file; the archive output is a folder of Parquet part files. "
                           "Pass a new path (e.g. OUT.parquet) or the folder of an earlier archive run.")
    rows = read_column_pairs(output, ["path", "model", "model_sha256"])
    other = {(m, s) for _, m, s in rows if s != model.sha256}
    if other:
        m, s = sorted(other)[0]
        raise ArchiveError(f"{output}: holds results of model {m!r} (sha256 {s[:12]}...), not of {model.name!r} "
                           f"({model.sha256[:12]}...); write to another --output, or use that model to resume it.")
    return {p for p, _, _ in rows}


def count_rows(output: Path, groups: list[set[str]]) -> list[tuple[int, int]]:
    """(rows, error rows) in ``output`` whose path is in each group of paths."""
    rows = read_column_pairs(output, ["path", "error"])
    return [(sum(p in g for p, _ in rows), sum(p in g and e is not None for p, e in rows)) for g in groups]


class PartWriter:
    """Buffers records and writes them as part files of ``rows_per_file`` rows (the last one shorter)."""

    def __init__(self, output: Path, model: ModelId, *, pa, rows_per_file: int = 4096):
        self.output, self.model, self.pa, self.rows_per_file = output, model, pa, max(1, rows_per_file)
        self._rows: list[dict] = []
        self._run = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self._parts = 0

    def add(self, rows: list[dict]) -> None:
        self._rows.extend(rows)
        while len(self._rows) >= self.rows_per_file:
            self._write(self._rows[:self.rows_per_file])
            del self._rows[:self.rows_per_file]

    def close(self) -> None:
        if self._rows:
            self._write(self._rows)
            self._rows = []

    def _write(self, rows: list[dict]) -> None:
        self.output.mkdir(parents=True, exist_ok=True)
        name = f"part-{self._run}-{self._parts:05d}.parquet"
        tmp = self.output / f".{name}.tmp"
        self.pa.parquet.write_table(table(rows, self.model, pa=self.pa), tmp)
        os.replace(tmp, self.output / name)
        self._parts += 1
