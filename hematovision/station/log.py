"""The station's durable log: one SQLite database (WAL mode), one row per classified cell.

Tables: ``sessions`` (one per run: model name + sha256, source, settings,
start/end and why it stopped), ``cells`` (time, session, source frame, crop
box, label, confidence, uncertain flag, model name + sha256, probabilities, the
crop's path) and ``frames`` (every frame and what became of it: classified,
no cells, repeated, blurry, empty, dark; frames skipped as unchanged are only
counted, in the session's ``summary``, as a still stage streams them all day)
and ``reviews`` (the technologist's verified labels, append-only; see
:mod:`hematovision.station.review`). Schema versions and migrations:
:mod:`hematovision.station.schema`; an older database is migrated when opened.

Durability: the connection is in autocommit mode, so every ``INSERT`` is its
own transaction. A cell's crop is written to disk first (to a temporary name,
then renamed), its row committed second: a ``kill -9`` at any moment loses at
most the cell in flight (an orphan crop file without a row, never a row
without its crop) and cannot corrupt the database (SQLite's WAL journal). With
``synchronous=NORMAL`` a committed row survives a crash of the process; a
power cut can roll back the last few commits but never corrupts the file. The
same holds for reviews: one transaction per review.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import cv2

from .. import __version__
from ..batch_shift import BatchShift, check_batch
from .differential import Differential
from ..errors import StationLogError
from .resume import ResumeError, ResumeModelError, ResumeSourceError, check_same_model, check_same_source
from .schema import RECOVER, SCHEMA_VERSION, CorruptDatabaseError, connect, row_id, stored_json

__all__ = ["CELL_COLUMNS", "SCHEMA_VERSION", "ResumeError", "ResumeModelError", "ResumeSourceError", "Session", "StationLog",
           "now_iso"]

#: Columns of ``cells`` in the order of the CSV export.
CELL_COLUMNS = ("id", "session_id", "time", "frame_index", "source_frame", "cell_in_frame", "x0", "y0", "x1", "y1", "label",
                "confidence", "uncertain", "out_of_distribution", "model_name", "model_sha256", "crop_path", "probabilities",
                "source_sha256", "ood_score", "atypical")


@dataclass(frozen=True)
class Session:
    id: int
    started: str
    ended: str | None
    stop_reason: str | None
    source: str
    mode: str
    model_name: str
    model_sha256: str
    labels: tuple[str, ...]
    source_key: str | None = None  # canonical source (absolute folder path...); None in a schema-1 session
    resumed: bool = False  # True when open_session continued this interrupted session
    counted: tuple[str, ...] | None = None  # the classes its differential counts (a lab's scope); None: all of labels

    @property
    def differential_labels(self) -> tuple[str, ...]:
        """The classes this session's differential lists: the scope's classes, or every label of the model."""
        return self.labels if self.counted is None else self.counted


SESSION_COLUMNS = "id, started, ended, stop_reason, source, mode, model_name, model_sha256, labels, source_key, counted"


def _verdict(value) -> bool | None:
    """A 0/1 column as a flag; NULL is no verdict (a model without an OOD reference, or a cell logged before schema 3)."""
    return None if value is None else bool(value)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StationLog:
    """Open (creating if needed) the station database at ``path``; use as a context manager."""

    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path = Path(path)
        self._db, self.journal_mode = connect(self.path, create=create)
        self._seq: dict[int, int] = {}

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "StationLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing ---

    def open_session(self, *, model_name: str, model_sha256: str, labels: tuple[str, ...], source: str = "", mode: str = "",
                     config: dict | None = None, resume: bool = False, source_key: str | None = None,
                     counted: tuple[str, ...] | None = None) -> Session:
        """Start a session; with ``resume``, continue the latest one instead if it was interrupted.

        Interrupted: never ended (killed, power cut) or ended by an error; a
        session that ended normally (target count, SIGTERM, end of the source)
        is finished, and a new one starts. ``source_key`` is the canonical source
        (default ``source``): resuming an interrupted session of another source
        raises :class:`ResumeSourceError`, of another model (sha256)
        :class:`ResumeModelError`; either leaves it untouched, still resumable. ``counted``: the classes the
        differential counts (``ModelSpec.counted_labels``: a lab scope's, or all ``labels``, stored as NULL);
        resuming needs the same.
        """
        key = source if source_key is None else source_key
        counted = None if counted is None or tuple(counted) == tuple(labels) else tuple(counted)
        if resume:
            last = self.latest_session()
            if last is not None and (last.ended is None or last.stop_reason == "error"):
                check_same_model(self.path, last, model_name, model_sha256, counted)
                check_same_source(self.path, last, key)
                self._db.execute("UPDATE sessions SET ended = NULL, stop_reason = NULL WHERE id = ?", (last.id,))
                return dataclasses.replace(self.session(last.id), resumed=True)
        cur = self._db.execute(
            "INSERT INTO sessions (started, source, source_key, mode, model_name, model_sha256, labels, config, software, "
            "counted) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (now_iso(), source, key, mode, model_name, model_sha256, json.dumps(list(labels)), json.dumps(config or {}),
             f"hematovision {__version__}", None if counted is None else json.dumps(list(counted))))
        return self.session(int(cur.lastrowid))

    def close_session(self, session_id: int, *, stop_reason: str, summary: dict | None = None) -> None:
        """Mark the session ended; ``summary`` holds the run's counts (e.g. the unchanged frames, not logged one by one),
        added to those of earlier runs of a resumed session."""
        row = self._db.execute("SELECT summary FROM sessions WHERE id = ?", (session_id,)).fetchone()
        total = self._summary(session_id, row[0] if row else None)
        for key, value in (summary or {}).items():
            total[key] = total.get(key, 0) + value
        self._db.execute("UPDATE sessions SET ended = ?, stop_reason = ?, summary = ? WHERE id = ?",
                         (now_iso(), stop_reason, json.dumps(total), session_id))

    def add_cell(self, session_id: int, *, frame, index_in_frame: int, crop, prediction, model_sha256: str, crops_dir: Path,
                 source_sha256: str | None = None) -> int:
        """Save the crop, then commit its row; returns the row id. ``source_sha256``: the source file's content hash."""
        seq = self._next_seq(session_id)
        name = f"{seq:06d}_f{frame.index:06d}_{index_in_frame:02d}_{_safe(prediction.label)}.jpg"
        path = crops_dir / name
        _write_jpeg(path, crop.image)
        ood, score, atypical = (getattr(prediction, k, None) for k in ("out_of_distribution", "ood_score", "atypical"))
        row = dict(session_id=session_id, time=now_iso(), frame_index=frame.index, source_frame=frame.name,
                   cell_in_frame=index_in_frame, **dict(zip(("x0", "y0", "x1", "y1"), (int(v) for v in crop.box))),
                   label=prediction.label, confidence=float(prediction.confidence), uncertain=int(bool(prediction.uncertain)),
                   out_of_distribution=None if ood is None else int(bool(ood)), model_name=prediction.model,
                   model_sha256=model_sha256, crop_path=self._stored_path(path), source_sha256=source_sha256,
                   ood_score=None if score is None else float(score), atypical=None if atypical is None else int(bool(atypical)),
                   probabilities=json.dumps({k: round(float(v), 5) for k, v in prediction.probabilities.items()}))
        cur = self._db.execute(f"INSERT INTO cells ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        return int(cur.lastrowid)

    def add_frame(self, session_id: int, *, frame, status: str, sharpness: float | None, found: int, classified: int,
                  detail: str = "", source_sha256: str | None = None) -> None:
        self._db.execute(
            "INSERT INTO frames (session_id, time, frame_index, source_frame, status, sharpness, cells_found, cells_classified, "
            "detail, source_sha256) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (session_id, now_iso(), frame.index, frame.name, status, sharpness, found, classified, detail, source_sha256))

    @contextmanager
    def transaction(self) -> Iterator:
        """One write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any error): all of it or nothing."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except StationLogError as exc:
            raise StationLogError(f"cannot start a write: {exc}") from exc
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _next_seq(self, session_id: int) -> int:
        if session_id not in self._seq:
            row = self._db.execute("SELECT COUNT(*) FROM cells WHERE session_id = ?", (session_id,)).fetchone()
            self._seq[session_id] = int(row[0])
        self._seq[session_id] += 1
        return self._seq[session_id]

    def _stored_path(self, path: Path) -> str:
        """Relative to the database's folder when inside it (the log can be moved with its crops)."""
        try:
            return str(path.resolve().relative_to(self.path.resolve().parent))
        except ValueError:
            return str(path.resolve())

    # --- reading ---

    def session(self, session_id: int) -> Session:
        sid = row_id(session_id)
        row = None if sid is None else self._db.execute(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", (sid,)).fetchone()
        if row is None:
            raise StationLogError(f"{self.path}: no session {session_id}; `report --db {self.path} --session all` lists them.")
        labels = stored_json(self.path, row[8], f"labels of session {row[0]}", list)
        counted = None if row[10] is None else tuple(stored_json(self.path, row[10], f"counted classes of session {row[0]}", list))
        return Session(*row[:8], labels=tuple(labels), source_key=row[9], counted=counted)

    def sessions(self) -> list[Session]:
        ids = [r[0] for r in self._db.execute("SELECT id FROM sessions ORDER BY id")]
        return [self.session(i) for i in ids]

    def latest_session(self) -> Session | None:
        row = self._db.execute("SELECT MAX(id) FROM sessions").fetchone()
        return self.session(row[0]) if row and row[0] is not None else None

    def differential(self, session_id: int | None = None, *, labels: tuple[str, ...] | None = None) -> Differential:
        """The differential of one session (None: all sessions) from the committed rows."""
        if labels is None:
            labels = self.session(session_id).differential_labels if session_id is not None else ()
        where, args = ("WHERE session_id = ?", (session_id,)) if session_id is not None else ("", ())
        rows = self._db.execute(f"SELECT label, uncertain FROM cells {where} ORDER BY id", args)
        return Differential.from_rows(labels, rows)

    def batch_shift(self, *session_ids: int) -> BatchShift:
        """Do these sessions' cells, as one batch, look unlike the training lab's? (:mod:`hematovision.batch_shift`)"""
        marks = ", ".join("?" * len(session_ids))
        rows = self._db.execute(f"SELECT out_of_distribution, atypical FROM cells WHERE session_id IN ({marks}) ORDER BY id",
                                session_ids).fetchall()
        return check_batch([_verdict(ood) for ood, _ in rows], atypical=[_verdict(a) for _, a in rows])

    def cells(self, session_id: int | None = None) -> Iterator[dict]:
        where, args = ("WHERE session_id = ?", (session_id,)) if session_id is not None else ("", ())
        for row in self._db.execute(f"SELECT {', '.join(CELL_COLUMNS)} FROM cells {where} ORDER BY id", args):
            yield dict(zip(CELL_COLUMNS, row))

    def frame_counts(self, session_id: int) -> dict[str, int]:
        """Frames per status; the unchanged ones come from the summary of a closed session."""
        counts = dict(self._db.execute("SELECT status, COUNT(*) FROM frames WHERE session_id = ? GROUP BY status ORDER BY status",
                                       (session_id,)).fetchall())
        row = self._db.execute("SELECT summary FROM sessions WHERE id = ?", (session_id,)).fetchone()
        unchanged = self._summary(session_id, row[0] if row else None).get("unchanged", 0)
        if unchanged:
            counts["unchanged"] = unchanged
        return counts

    def _summary(self, session_id: int, text: str | None) -> dict:
        return stored_json(self.path, text, f"summary of session {session_id}", dict) if text else {}

    def frame_names(self, session_id: int) -> set[str]:
        """Source frames of a session that were logged or gave a committed cell."""
        return set(self.frame_hashes(session_id))

    def frame_hashes(self, session_id: int) -> dict[str, set[str | None]]:
        """Source frame name -> the content hashes it had when logged (None: not a file, or a schema-1 row)."""
        done: dict[str, set[str | None]] = {}
        for name, sha in self._db.execute("SELECT source_frame, source_sha256 FROM frames WHERE session_id = ? UNION "
                                          "SELECT source_frame, source_sha256 FROM cells WHERE session_id = ?",
                                          (session_id, session_id)):
            done.setdefault(name, set()).add(sha)
        return done

    def cell(self, cell_id: int) -> dict | None:
        """One cell row (as :meth:`cells`) or None."""
        if row_id(cell_id) is None:
            return None
        row = self._db.execute(f"SELECT {', '.join(CELL_COLUMNS)} FROM cells WHERE id = ?", (row_id(cell_id),)).fetchone()
        return dict(zip(CELL_COLUMNS, row)) if row else None

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Rows of a read-only query (for :mod:`hematovision.station.review`); a damaged database raises StationLogError."""
        return self._db.execute(sql, args).fetchall()

    def quick_check(self) -> str:
        """``PRAGMA quick_check``: "ok", or what is damaged (run before writing to a database of unknown origin)."""
        try:
            return str(self._db.execute("PRAGMA quick_check").fetchone()[0])
        except StationLogError as exc:
            return str(exc.__cause__ or exc)

    def require_intact(self) -> None:
        """Raise :class:`CorruptDatabaseError` before writing to a database that fails SQLite's quick check."""
        check = self.quick_check()
        if check != "ok":
            raise CorruptDatabaseError(f"{self.path}: damaged database ({check.splitlines()[0]}); nothing written. "
                                       f"{RECOVER.format(path=self.path)}")

    def integrity(self) -> str:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", label)[:40] or "cell"


def _write_jpeg(path: Path, rgb) -> None:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise StationLogError(f"{path}: could not encode the crop as JPEG.")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.tobytes())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StationLogError(f"{path}: cannot save the crop ({exc}); check --crops-dir and free disk space.") from exc
