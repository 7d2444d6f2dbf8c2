"""The Review tab's working folders: a station zip unpacked safely, and old untouched working copies removed.

A zip upload is unpacked only as far as a station folder needs it: its database (``.sqlite``, ``.sqlite3`` or
``.db``, with SQLite's ``-wal``, ``-shm`` and ``-journal`` files) and the cell crops (image files); any other
member is skipped. A member over its size cap, or packed suspiciously well (a "zip bomb"), refuses the zip before
anything is written, and so does a zip whose station files together exceed :data:`MAX_UNZIPPED_BYTES`.

Working copies hold the reviews made in the app, so a copy is removed only when it is one of the oldest (beyond
the :data:`KEEP_WORKING_COPIES` most recent), untouched for :data:`IDLE_S`, and has no review made in the app
(its latest review id is the one it was uploaded with, recorded in :data:`MARKER`).
"""

from __future__ import annotations

import logging
import shutil
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .errors import refusal

log = logging.getLogger("hematovision.app")
DB_SUFFIXES = (".sqlite", ".sqlite3", ".db")
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
CROP_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: The station files of one zip may unpack to at most this much in all.
MAX_UNZIPPED_BYTES = 1 << 30
#: One crop may unpack to at most this much (a cell crop is a small JPEG).
MAX_CROP_BYTES = 64 << 20
MAX_ZIP_MEMBERS = 200_000
#: A member over 1 MiB unpacked may be at most this many times its packed size (SQLite and JPEG pack far less).
MAX_RATIO = 200
HOW_TO_ZIP = "zip the station folder itself (its .sqlite and crops folder), or upload the .sqlite alone."
#: Working copies kept however old; beyond them, untouched copies without reviews made in the app are removed.
KEEP_WORKING_COPIES = 20
IDLE_S = 3600
#: In a working copy: the latest review id it had when it was made (its reviews made in the app come after).
MARKER = ".reviews-at-upload"


def wanted(name: str) -> bool:
    """Whether a zip member is part of a station folder: its database (with SQLite's side files) or a crop."""
    lower = name.lower()
    if PurePosixPath(lower).name.startswith("._") or lower.startswith("__macosx/"):
        return False
    return lower.endswith(CROP_SUFFIXES) or any(lower.endswith(s + c) for s in DB_SUFFIXES for c in ("", *SQLITE_COMPANIONS))


def unzip_station(upload: Path, dest: Path) -> None:
    """Unpack a station zip's database and crops into ``dest``: plain files, every path inside ``dest``, within
    the size limits (checked for every member before anything is written)."""
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError):
        raise refusal(f"{upload.name}: not a readable zip file; {HOW_TO_ZIP}", where="review") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        for member in members:
            _safe_parts(upload, member)
        members = [m for m in members if wanted(m.filename.replace("\\", "/"))]
        _check_sizes(upload, members)
        for member in members:
            target = dest.joinpath(*_safe_parts(upload, member))
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)  # at most the member's declared size: zipfile stops there
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise refusal(f"{upload.name}: {member.filename!r} cannot be unpacked ({exc}); make the zip again: "
                              f"{HOW_TO_ZIP}", where="review") from None


def _safe_parts(upload: Path, member) -> tuple[str, ...]:
    parts = PurePosixPath(member.filename.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or ".." in parts or ":" in parts[0]:
        raise refusal(f"{upload.name}: unsafe path {member.filename!r} in the zip; zip the station folder itself.",
                      where="review")
    return parts


def _check_sizes(upload: Path, members) -> None:
    """Refuse the zip when its station files are too many, too large, or packed suspiciously well."""
    if len(members) > MAX_ZIP_MEMBERS:
        raise refusal(f"{upload.name}: more than {MAX_ZIP_MEMBERS} station files; zip one station folder.", where="review")
    for m in members:
        crop = m.filename.lower().endswith(CROP_SUFFIXES)
        if (crop and m.file_size > MAX_CROP_BYTES) or (m.file_size > 1 << 20 and m.file_size > MAX_RATIO * max(1, m.compress_size)):
            raise refusal(f"{upload.name}: {m.filename!r} would unpack to {m.file_size / 2**20:.0f} MiB from "
                          f"{m.compress_size / 2**20:.1f} MiB (limits: {MAX_CROP_BYTES >> 20} MiB per crop, at most "
                          f"{MAX_RATIO} times its packed size); that is no station file: {HOW_TO_ZIP}", where="review")
    total = sum(m.file_size for m in members)
    if total > MAX_UNZIPPED_BYTES:
        raise refusal(f"{upload.name}: its station files would unpack to {total / 2**30:.1f} GiB, over the app's "
                      f"{MAX_UNZIPPED_BYTES / 2**30:.1f} GiB limit; upload the .sqlite alone (the crops are then not shown), "
                      "or review the database on the station with `python app.py --review-db PATH`.", where="review")


# --------------------------------------------------------------------------- old working copies


def mark_reviews(folder: Path, latest_review_id: int) -> None:
    """Record, once, the latest review id a new working copy had (its reviews made in the app come after it)."""
    marker = folder / MARKER
    if not marker.exists():
        marker.write_text(str(int(latest_review_id)), encoding="ascii")


def remove_old_copies(review_dir: Path, latest_review_id) -> list[str]:
    """Remove the oldest working copies beyond the :data:`KEEP_WORKING_COPIES` most recent that are idle and have no
    review made in the app; ``latest_review_id(db_path)`` reads a copy's latest review id. Returns the removed names."""
    folders = sorted((f for f in review_dir.iterdir() if f.is_dir() and not f.name.startswith(".")),
                     key=lambda f: f.stat().st_mtime, reverse=True) if review_dir.is_dir() else []
    removed = []
    for folder in folders[KEEP_WORKING_COPIES:]:
        if _disposable(folder, latest_review_id):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    if removed:
        log.info("review: removed %d old working copies without reviews made in the app", len(removed))
    return removed


def _disposable(folder: Path, latest_review_id) -> bool:
    try:
        recorded = int((folder / MARKER).read_text(encoding="ascii"))
        files = [p for p in folder.rglob("*") if p.is_file()]
        if time.time() - max(p.stat().st_mtime for p in files) < IDLE_S:
            return False
        (db,) = [p for p in files if p.suffix.lower() in DB_SUFFIXES]
        return latest_review_id(db) == recorded
    except Exception:  # noqa: BLE001 - anything unclear (no marker, two databases, unreadable): keep the copy
        return False
