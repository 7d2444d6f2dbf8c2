"""The station's durable log: one SQLite database (WAL mode), one row per classified cell.

Tables: ``sessions`` (one per run: model name + sha256, source, settings,
start/end and why it stopped), ``cells`` (time, session, source frame, crop
box, label, confidence, uncertain flag, model name + sha256, probabilities, the
crop's path) and ``frames`` (every frame and what became of it: classified,
no cells, repeated, blurry, empty, dark; frames skipped as unchanged are only
counted, in the session's ``summary``, as a still stage streams them all day).

Durability: the connection is in autocommit mode, so every ``INSERT`` is its
own transaction. A cell's crop is written to disk first (to a temporary name,
then renamed), its row committed second: a ``kill -9`` at any moment loses at
most the cell in flight (an orphan crop file without a row, never a row
without its crop) and cannot corrupt the database (SQLite's WAL journal). With
``synchronous=NORMAL`` a committed row survives a crash of the process; a
power cut can roll back the last few commits but never corrupts the file.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import cv2

from . import __version__
from .differential import Differential
from .errors import StationLogError

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    started TEXT NOT NULL,
    ended TEXT,
    stop_reason TEXT,
    source TEXT,
    mode TEXT,
    model_name TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    labels TEXT NOT NULL,
    config TEXT,
    software TEXT,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS cells (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    time TEXT NOT NULL,
    frame_index INTEGER NOT NULL,
    source_frame TEXT NOT NULL,
    cell_in_frame INTEGER NOT NULL,
    x0 INTEGER NOT NULL, y0 INTEGER NOT NULL, x1 INTEGER NOT NULL, y1 INTEGER NOT NULL,
    label TEXT NOT NULL,
    confidence REAL NOT NULL,
    uncertain INTEGER NOT NULL,
    out_of_distribution INTEGER,
    probabilities TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    crop_path TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cells_by_session ON cells(session_id);
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    time TEXT NOT NULL,
    frame_index INTEGER NOT NULL,
    source_frame TEXT NOT NULL,
    status TEXT NOT NULL,
    sharpness REAL,
    cells_found INTEGER NOT NULL DEFAULT 0,
    cells_classified INTEGER NOT NULL DEFAULT 0,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS frames_by_session ON frames(session_id);
"""

#: Columns of ``cells`` in the order of the CSV export.
CELL_COLUMNS = ("id", "session_id", "time", "frame_index", "source_frame", "cell_in_frame", "x0", "y0", "x1", "y1", "label",
                "confidence", "uncertain", "out_of_distribution", "model_name", "model_sha256", "crop_path", "probabilities")


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


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StationLog:
    """Open (creating if needed) the station database at ``path``; use as a context manager."""

    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StationLogError(f"{self.path}: no such station database; check --db (the station creates it).")
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA busy_timeout = 10000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous = NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StationLogError(f"{self.path}: written by a newer hematovision (schema {version} > {SCHEMA_VERSION}); upgrade.")
            if create and version < SCHEMA_VERSION:
                self._db.executescript(f"BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
            elif version < SCHEMA_VERSION:
                raise StationLogError(f"{self.path}: not a HematoVision station database (no schema).")
        except sqlite3.DatabaseError as exc:
            raise StationLogError(f"{self.path}: cannot open as a station database ({exc}); pass another --db path.") from exc
        except OSError as exc:
            raise StationLogError(f"{self.path}: cannot create the database ({exc}).") from exc
        self.journal_mode = mode
        self._seq: dict[int, int] = {}

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "StationLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing ---

    def open_session(self, *, model_name: str, model_sha256: str, labels: tuple[str, ...], source: str = "", mode: str = "",
                     config: dict | None = None, resume: bool = False) -> Session:
        """Start a session; with ``resume``, continue the latest one instead if it was interrupted.

        Interrupted: never ended (killed, power cut) or ended by an error; a
        session that ended normally (target count, SIGTERM, end of the source)
        is finished, and a new one starts. A different model never resumes.
        """
        if resume:
            last = self.latest_session()
            if last is not None and last.model_sha256 == model_sha256 and (last.ended is None or last.stop_reason == "error"):
                self._db.execute("UPDATE sessions SET ended = NULL, stop_reason = NULL WHERE id = ?", (last.id,))
                return self.session(last.id)
        cur = self._db.execute(
            "INSERT INTO sessions (started, source, mode, model_name, model_sha256, labels, config, software) VALUES (?,?,?,?,?,?,?,?)",
            (now_iso(), source, mode, model_name, model_sha256, json.dumps(list(labels)), json.dumps(config or {}),
             f"hematovision {__version__}"))
        return self.session(int(cur.lastrowid))

    def close_session(self, session_id: int, *, stop_reason: str, summary: dict | None = None) -> None:
        """Mark the session ended; ``summary`` holds the run's counts (e.g. the unchanged frames, not logged one by one),
        added to those of earlier runs of a resumed session."""
        row = self._db.execute("SELECT summary FROM sessions WHERE id = ?", (session_id,)).fetchone()
        total = json.loads(row[0]) if row and row[0] else {}
        for key, value in (summary or {}).items():
            total[key] = total.get(key, 0) + value
        self._db.execute("UPDATE sessions SET ended = ?, stop_reason = ?, summary = ? WHERE id = ?",
                         (now_iso(), stop_reason, json.dumps(total), session_id))

    def add_cell(self, session_id: int, *, frame, index_in_frame: int, crop, prediction, model_sha256: str, crops_dir: Path) -> int:
        """Save the crop, then commit its row; returns the row id."""
        seq = self._next_seq(session_id)
        name = f"{seq:06d}_f{frame.index:06d}_{index_in_frame:02d}_{_safe(prediction.label)}.jpg"
        path = crops_dir / name
        _write_jpeg(path, crop.image)
        ood = getattr(prediction, "out_of_distribution", None)
        try:
            cur = self._db.execute(
                f"INSERT INTO cells ({', '.join(CELL_COLUMNS[1:])}) VALUES ({', '.join('?' * (len(CELL_COLUMNS) - 1))})",
                (session_id, now_iso(), frame.index, frame.name, index_in_frame, *(int(v) for v in crop.box), prediction.label,
                 float(prediction.confidence), int(bool(prediction.uncertain)), None if ood is None else int(bool(ood)),
                 prediction.model, model_sha256, self._stored_path(path),
                 json.dumps({k: round(float(v), 5) for k, v in prediction.probabilities.items()})))
        except sqlite3.Error as exc:
            raise StationLogError(f"{self.path}: cannot write a cell row ({exc}).") from exc
        return int(cur.lastrowid)

    def add_frame(self, session_id: int, *, frame, status: str, sharpness: float | None, found: int, classified: int,
                  detail: str = "") -> None:
        try:
            self._db.execute(
                "INSERT INTO frames (session_id, time, frame_index, source_frame, status, sharpness, cells_found, cells_classified, detail)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (session_id, now_iso(), frame.index, frame.name, status, sharpness, found, classified, detail))
        except sqlite3.Error as exc:
            raise StationLogError(f"{self.path}: cannot write a frame row ({exc}).") from exc

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
        row = self._db.execute("SELECT id, started, ended, stop_reason, source, mode, model_name, model_sha256, labels "
                               "FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise StationLogError(f"{self.path}: no session {session_id}; `report --db {self.path}` lists them.")
        return Session(*row[:8], labels=tuple(json.loads(row[8])))

    def sessions(self) -> list[Session]:
        ids = [r[0] for r in self._db.execute("SELECT id FROM sessions ORDER BY id")]
        return [self.session(i) for i in ids]

    def latest_session(self) -> Session | None:
        row = self._db.execute("SELECT MAX(id) FROM sessions").fetchone()
        return self.session(row[0]) if row and row[0] is not None else None

    def differential(self, session_id: int | None = None, *, labels: tuple[str, ...] | None = None) -> Differential:
        """The differential of one session (None: all sessions) from the committed rows."""
        if labels is None:
            labels = self.session(session_id).labels if session_id is not None else ()
        where, args = ("WHERE session_id = ?", (session_id,)) if session_id is not None else ("", ())
        rows = self._db.execute(f"SELECT label, uncertain FROM cells {where} ORDER BY id", args)
        return Differential.from_rows(labels, rows)

    def cells(self, session_id: int | None = None) -> Iterator[dict]:
        where, args = ("WHERE session_id = ?", (session_id,)) if session_id is not None else ("", ())
        for row in self._db.execute(f"SELECT {', '.join(CELL_COLUMNS)} FROM cells {where} ORDER BY id", args):
            yield dict(zip(CELL_COLUMNS, row))

    def frame_counts(self, session_id: int) -> dict[str, int]:
        """Frames per status; the unchanged ones come from the summary of a closed session."""
        counts = dict(self._db.execute("SELECT status, COUNT(*) FROM frames WHERE session_id = ? GROUP BY status ORDER BY status",
                                       (session_id,)).fetchall())
        row = self._db.execute("SELECT summary FROM sessions WHERE id = ?", (session_id,)).fetchone()
        unchanged = json.loads(row[0]).get("unchanged", 0) if row and row[0] else 0
        if unchanged:
            counts["unchanged"] = unchanged
        return counts

    def frame_names(self, session_id: int) -> set[str]:
        """Source frames of a session that were logged or gave a committed cell."""
        return {r[0] for r in self._db.execute("SELECT source_frame FROM frames WHERE session_id = ? UNION "
                                               "SELECT source_frame FROM cells WHERE session_id = ?", (session_id, session_id))}

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
