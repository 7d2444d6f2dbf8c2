"""The station database's schema, its versions and migrations, and the checks made before anything is written.

Version 1 (the first release) is kept unchanged in :data:`SCHEMA_V1`; every
later version is a migration on top of it, so a new database and an old one
brought up to date have the same schema (every fresh database runs the
migrations). ``PRAGMA user_version`` holds the version.

Version 2 adds the technologist's review: an append-only ``reviews`` table
(cell id, verified label, reviewer, time, note; triggers refuse UPDATE and
DELETE, and another refuses changing a cell's model label), the content hash of
each source file (``cells.source_sha256``, ``frames.source_sha256``) and the
canonical source of a session (``sessions.source_key``) that ``--resume`` checks.

Version 3 keeps each cell's out-of-distribution score and whether it was
*atypical* (``cells.ood_score``, ``cells.atypical``; :mod:`hematovision.batch_shift`
counts the atypical cells of a session). Cells logged before it have NULL there.

Version 4 keeps the classes a session's differential counts (``sessions.counted``,
a JSON list): a lab's differential scope (:mod:`hematovision.scope`), whose other
classes the model never names, so that a report does not state "0 %" for a class
nobody counted. NULL (every earlier session, and an unscoped model): every class.

:func:`connect` opens a file only after checking that it is an SQLite file
and, when it exists, a HematoVision one: a foreign or damaged file is refused
before WAL mode (which is written into the file) is switched on. It returns a
:class:`Connection` whose every SQLite error becomes a one-line
:class:`StationLogError` (a damaged file: :class:`CorruptDatabaseError`), as does
a JSON column that is not what hematovision wrote (:func:`stored_json`).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import StationLogError

SQLITE_MAGIC = b"SQLite format 3\x00"
SCHEMA_VERSION = 4
TABLES = ("sessions", "cells", "frames")
#: Tables a database of each version must have besides :data:`TABLES` (``reviews`` came with version 2).
TABLES_SINCE = {2: ("reviews",)}
#: The largest id SQLite stores (a signed 64-bit INTEGER): a bigger or non-positive number names no row.
MAX_ROW_ID = 2**63 - 1

#: The schema of version 1 as released (same tables, columns and types). Never edit: add a migration instead.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY, started TEXT NOT NULL, ended TEXT, stop_reason TEXT, source TEXT, mode TEXT,
    model_name TEXT NOT NULL, model_sha256 TEXT NOT NULL, labels TEXT NOT NULL, config TEXT, software TEXT, summary TEXT
);
CREATE TABLE IF NOT EXISTS cells (
    id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL REFERENCES sessions(id), time TEXT NOT NULL,
    frame_index INTEGER NOT NULL, source_frame TEXT NOT NULL, cell_in_frame INTEGER NOT NULL,
    x0 INTEGER NOT NULL, y0 INTEGER NOT NULL, x1 INTEGER NOT NULL, y1 INTEGER NOT NULL,
    label TEXT NOT NULL, confidence REAL NOT NULL, uncertain INTEGER NOT NULL, out_of_distribution INTEGER,
    probabilities TEXT NOT NULL, model_name TEXT NOT NULL, model_sha256 TEXT NOT NULL, crop_path TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cells_by_session ON cells(session_id);
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL REFERENCES sessions(id), time TEXT NOT NULL,
    frame_index INTEGER NOT NULL, source_frame TEXT NOT NULL, status TEXT NOT NULL, sharpness REAL,
    cells_found INTEGER NOT NULL DEFAULT 0, cells_classified INTEGER NOT NULL DEFAULT 0, detail TEXT
);
CREATE INDEX IF NOT EXISTS frames_by_session ON frames(session_id);
"""

#: ``MIGRATIONS[v]`` brings a version-``v`` database to version ``v + 1``.
MIGRATIONS = {
    1: """
ALTER TABLE sessions ADD COLUMN source_key TEXT;
ALTER TABLE cells ADD COLUMN source_sha256 TEXT;
ALTER TABLE frames ADD COLUMN source_sha256 TEXT;
CREATE TABLE reviews (
    id INTEGER PRIMARY KEY, cell_id INTEGER NOT NULL REFERENCES cells(id), label TEXT NOT NULL,
    reviewer TEXT NOT NULL, time TEXT NOT NULL, note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX reviews_by_cell ON reviews(cell_id, id);
CREATE TRIGGER reviews_no_update BEFORE UPDATE ON reviews
    BEGIN SELECT RAISE(ABORT, 'reviews are append-only: add a new review instead'); END;
CREATE TRIGGER reviews_no_delete BEFORE DELETE ON reviews
    BEGIN SELECT RAISE(ABORT, 'reviews are append-only: add a new review instead'); END;
CREATE TRIGGER cells_keep_model_label BEFORE UPDATE OF label ON cells
    BEGIN SELECT RAISE(ABORT, 'the model label of a cell is never changed: add a review instead'); END;
""",
    2: """
ALTER TABLE cells ADD COLUMN ood_score REAL;
ALTER TABLE cells ADD COLUMN atypical INTEGER;
""",
    3: """
ALTER TABLE sessions ADD COLUMN counted TEXT;
""",
}


class NotAStationDatabaseError(StationLogError, ValueError):
    """The file is not a HematoVision station database (another file type, or another program's SQLite database)."""


class CorruptDatabaseError(StationLogError, ValueError):
    """The file looks like an SQLite database but SQLite cannot read it, or what it holds is not what hematovision wrote."""


RECOVER = "Restore it from a backup, or recover it with `sqlite3 {path} .recover | sqlite3 recovered.sqlite`."


def file_head(path: Path) -> bytes:
    """The first bytes of a file, as many as :data:`SQLITE_MAGIC` has (``== SQLITE_MAGIC``: an SQLite database)."""
    with open(path, "rb") as fh:
        return fh.read(len(SQLITE_MAGIC))


def check_file(path: Path, *, create: bool) -> None:
    """Refuse a path that cannot be a station database, reading only its first bytes."""
    if path.is_dir():
        raise NotAStationDatabaseError(f"{path}: is a folder; pass the station's database file (e.g. station.sqlite) to --db.")
    if not path.exists():
        if not create:
            raise StationLogError(f"{path}: no such station database; check --db (the station creates it).")
        return
    try:
        head = file_head(path)
    except OSError as exc:
        raise StationLogError(f"{path}: cannot read the database ({exc}); check the path and its permissions.") from exc
    if not head and not create:
        raise NotAStationDatabaseError(f"{path}: empty file, not a HematoVision station database; pass the station's --db file.")
    if head and head != SQLITE_MAGIC:
        raise NotAStationDatabaseError(f"{path}: not an SQLite database (it starts with {head[:8]!r}); pass the station's "
                                       "--db file (created by `python -m hematovision station`).")


def inspect(db: sqlite3.Connection, path: Path, *, create: bool) -> int:
    """The schema version of an open database; refuses foreign, damaged and newer ones. Reads only."""
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise CorruptDatabaseError(f"{path}: damaged database ({exc}). {RECOVER.format(path=path)}") from exc
    if version == 0 and not tables and create:
        return 0
    missing = [t for t in TABLES if t not in tables]
    if version == 0 or missing:
        found = ", ".join(sorted(tables)) or "none"
        raise NotAStationDatabaseError(f"{path}: an SQLite file but not a HematoVision station database (schema version "
                                       f"{version}, tables: {found}); pass the station's --db file.")
    if version > SCHEMA_VERSION:
        raise StationLogError(f"{path}: written by a newer hematovision (schema {version} > {SCHEMA_VERSION}); upgrade.")
    lost = [t for v, names in TABLES_SINCE.items() if version >= v for t in names if t not in tables]
    if version < 0 or lost:
        what = f"schema version {version}" if version < 0 else f"schema {version} without its {', '.join(lost)} table"
        raise CorruptDatabaseError(f"{path}: damaged database ({what}); nothing was changed. {RECOVER.format(path=path)}")
    return version


def upgrade(db: sqlite3.Connection, path: Path) -> None:
    """Create or migrate to :data:`SCHEMA_VERSION` in one transaction (re-checked inside it: two processes may race)."""
    try:
        db.execute("BEGIN IMMEDIATE")
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version == 0:
            _script(db, SCHEMA_V1)
            version = 1
        while version < SCHEMA_VERSION:
            _script(db, MIGRATIONS[version])
            version += 1
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise StationLogError(f"{path}: cannot bring the database to schema {SCHEMA_VERSION} ({exc}); nothing was changed. "
                              "Check free disk space and write permission.") from exc


def _script(db: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated statements inside the caller's transaction (``executescript`` would commit it)."""
    statement = ""
    for line in script.strip().splitlines():
        statement += line + "\n"
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""


def connect(path: Path, *, create: bool) -> tuple["Connection", str]:
    """Open (and create, or migrate) the database; returns the connection (autocommit) and the journal mode."""
    check_file(path, create=create)
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    except (OSError, sqlite3.Error) as exc:
        raise StationLogError(f"{path}: cannot create the database ({exc}).") from exc
    try:
        db.execute("PRAGMA busy_timeout = 10000")
        version = inspect(db, path, create=create)
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        db.execute("PRAGMA synchronous = NORMAL")
        if version < SCHEMA_VERSION:
            upgrade(db, path)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise CorruptDatabaseError(f"{path}: cannot open as a station database ({exc}); pass another --db path.") from exc
    except StationLogError:
        db.close()
        raise
    return Connection(db, path), mode


# --- the open connection: SQLite's errors and bad stored values become StationLogError -------------------------------


def database_error(path: Path, exc: sqlite3.Error) -> StationLogError:
    """The error to raise for an SQLite failure: a damaged file (:class:`CorruptDatabaseError`) or another failure."""
    if type(exc) is sqlite3.DatabaseError or getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return CorruptDatabaseError(f"{path}: damaged database ({exc}). {RECOVER.format(path=path)}")
    return StationLogError(f"{path}: the database failed ({exc}); check that no other program holds it, free disk space "
                           "and write permission, and its health with `sqlite3 DB 'PRAGMA integrity_check'`.")


@contextmanager
def sqlite_errors(path: Path) -> Iterator[None]:
    """Turn an ``sqlite3.Error`` raised inside into :func:`database_error` (a one-line message, no traceback)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise database_error(path, exc) from exc


def storable(value):
    """A value SQLite can bind: text with undecodable bytes (a non-UTF-8 file name) keeps them as ``\\xNN`` escapes."""
    if not isinstance(value, str):
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        try:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")


class Connection:
    """An open station database (autocommit): every read and write raises :class:`StationLogError`, never ``sqlite3``'s."""

    def __init__(self, con: sqlite3.Connection, path: Path):
        self._con, self.path = con, path

    def execute(self, sql: str, args: tuple = ()) -> "Rows":
        with sqlite_errors(self.path):
            return Rows(self._con.execute(sql, tuple(storable(a) for a in args)), self.path)

    @property
    def in_transaction(self) -> bool:
        return self._con.in_transaction

    def close(self) -> None:
        self._con.close()


class Rows:
    """A cursor whose reads convert SQLite's errors too (a damaged page may show only when its rows are read)."""

    def __init__(self, cursor: sqlite3.Cursor, path: Path):
        self._cursor, self._path = cursor, path

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    def fetchone(self):
        with sqlite_errors(self._path):
            return self._cursor.fetchone()

    def fetchall(self) -> list:
        with sqlite_errors(self._path):
            return self._cursor.fetchall()

    def __iter__(self):
        while True:
            with sqlite_errors(self._path):
                batch = self._cursor.fetchmany(256)
            if not batch:
                return
            yield from batch


def stored_json(path: Path, text, what: str, kind: type):
    """Parse a JSON column written by hematovision (``kind``: list or dict); anything else is a damaged database."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise CorruptDatabaseError(f"{path}: damaged database ({what}: not valid JSON, {exc}). "
                                   f"{RECOVER.format(path=path)}") from None
    if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
        raise CorruptDatabaseError(f"{path}: damaged database ({what}: not a JSON {kind.__name__} as hematovision writes "
                                   f"it). {RECOVER.format(path=path)}")
    return value


def row_id(value) -> int | None:
    """``value`` as a row id SQLite can hold, or None when no row can have it (0, negative, over 2**63 - 1)."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if 0 < number <= MAX_ROW_ID else None
