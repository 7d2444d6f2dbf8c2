"""Which station database the Review tab works on: the app's own (``--review-db``) or an uploaded one.

``python app.py --review-db PATH`` (or ``HEMATOVISION_REVIEW_DB=PATH``) names the
lab's station database on the server: it is opened in place, so every browser
session reviews the same cells and the station's CLI sees the reviews at once.

An upload (the ``.sqlite`` alone, or a ``.zip`` of the station folder with its
crops) becomes a working copy in the app's review folder, one per uploaded
content: uploading the same file again (another technologist, another browser)
reopens that copy with the reviews made so far. The working copy is the app's,
not the lab's: download the reviews CSV and import it into the station's
database (``python -m hematovision review --db DB --import CSV``). Crops of an
uploaded database are only read inside its working folder. A zip is unpacked
within limits, and old working copies without reviews made in the app are
removed: see :mod:`hematovision.web.review_files`.

A batch of the Batch tab is written as one session of a new station database in
the same folder (``batch-<id>/batch.sqlite`` with its crops): "Review this batch"
(``/review_batch``) opens the calling session's latest batch like an upload.

Every read and write goes through :mod:`hematovision.station.review` and
:class:`hematovision.station.log.StationLog`; the app writes no SQL.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import gradio as gr

from ..errors import StationLogError
from ..registry import sha256_file
from ..station.sources import Frame
from ..cells.detection import whole_frame
from ..images import load_image
from ..station.log import StationLog
from ..station.review import latest_reviews
from .errors import public, refusal
from .files import upload_path
from .paths import REVIEW_DIR
from .review_files import DB_SUFFIXES, mark_reviews, remove_old_copies, unzip_station

UPLOAD_TYPES = [*DB_SUFFIXES, ".zip"]
HOW_TO_UPLOAD = ("In the Review tab, upload the station's database (the .sqlite file the station writes), or a .zip of "
                 "its folder with the crops.")

_configured: Path | None = None


def set_configured_db(path):
    """The server's station database (``python app.py --review-db PATH``); None: HEMATOVISION_REVIEW_DB, if set."""
    global _configured
    _configured = Path(path).expanduser().resolve() if path else None


def configured_db() -> Path | None:
    if _configured is not None:
        return _configured
    env = os.environ.get("HEMATOVISION_REVIEW_DB", "").strip()
    return Path(env).expanduser().resolve() if env else None


def is_upload(db_path) -> bool:
    return Path(db_path).resolve().is_relative_to(REVIEW_DIR.resolve())


SERVER_ID = "server"
NOT_OPEN = "Open a station database first (upload it above, or open the app's own)."


def database_id(path) -> str:
    """What names an open database in the API: ``server`` (the configured one) or ``upload/<working copy>``."""
    path = Path(path).resolve()
    if is_upload(path):
        return "upload/" + path.relative_to(REVIEW_DIR.resolve()).as_posix()
    return SERVER_ID


def resolve_database(database) -> Path:
    """The database an id from :func:`database_id` names; anything else is refused (no other server path)."""
    text = str(database or "").strip()
    if not text:
        raise refusal(NOT_OPEN, where="review")
    if text == SERVER_ID:
        path = configured_db()
        if path is None:
            raise refusal("The app was started without a station database (--review-db); upload one.", where="review")
        return path
    kind, _, rest = text.partition("/")
    path = (REVIEW_DIR / rest).resolve()
    if (kind != "upload" or not path.is_relative_to(REVIEW_DIR.resolve()) or path.suffix.lower() not in DB_SUFFIXES
            or not path.is_file()):
        raise refusal(f"{text[:60]!r} names no open station database: {NOT_OPEN}", where="review")
    return path


def crop_file(db_path, cell) -> Path | None:
    """The crop of a cell (relative paths are relative to the database's folder); None when it cannot be shown:
    missing, or (an uploaded database) outside its working folder."""
    db_path = Path(db_path)
    crop = Path(cell["crop_path"])
    crop = (crop if crop.is_absolute() else db_path.parent / crop).resolve()
    if is_upload(db_path) and not crop.is_relative_to(db_path.parent.resolve()):
        return None
    return crop if crop.is_file() else None


#: A clause of the core's messages that names a CLI flag or command (`sqlite3 PATH .recover`, check --db, ...).
CLI_CLAUSE = re.compile(r"`|--db\b")
RESTORE = "Restore it from a backup"


def web_message(exc, db_path) -> str:
    """The core's message about the database at ``db_path`` for the page: its file name only (no server folders),
    without the CLI's hints, and what to do here instead."""
    text = str(exc)
    for path in {str(db_path), str(Path(db_path).resolve())}:
        text = text.replace(path, Path(db_path).name)
    clauses = [c for c in re.split(r"(?<=[;.])\s+", public(text)) if not CLI_CLAUSE.search(c)]
    text = " ".join(clauses).rstrip(" ;,.") + "."
    if is_upload(db_path):
        return f"{text} {RESTORE + ', then upload it again. ' if 'damaged' in text else ''}{HOW_TO_UPLOAD}"
    return (f"{text} {RESTORE + ' and restart the app' if 'damaged' in text else 'Check the path'} (the app's "
            "--review-db or HEMATOVISION_REVIEW_DB), or upload the database in the Review tab.")


@contextmanager
def station(db_path):
    """The station database, opened for one request (SQLite connections stay in the thread that made them)."""
    try:
        db = StationLog(db_path, create=False)
    except StationLogError as exc:  # named by its file name: the server's folders are not the user's business
        raise refusal(web_message(exc, db_path), where="review") from None
    try:
        yield db
    finally:
        db.close()


def open_database(upload) -> Path:
    """The database to review: a working copy of ``upload``, else the configured one; checked before use."""
    if upload is None:
        path = configured_db()
        if path is None:
            raise refusal("No station database to open: upload one (.sqlite, or a .zip of the station folder with its "
                          "crops), or start the app with `python app.py --review-db PATH` (or HEMATOVISION_REVIEW_DB).")
        if not path.is_file():
            raise refusal(f"{path.name}: the station database the app was started with is not there; check "
                          "--review-db / HEMATOVISION_REVIEW_DB.", where="review")
    else:
        path = working_copy(Path(upload_path(upload)))
    try:
        with station(path) as db:
            check = db.quick_check()
            if upload is not None and check == "ok":
                mark_reviews(working_folder(path), latest_review_id(db))
    except gr.Error:
        if upload is not None:  # not a station database: its working copy is of no use
            shutil.rmtree(working_folder(path), ignore_errors=True)
        raise
    if check != "ok":
        raise refusal(web_message(f"{path.name}: damaged database ({check.splitlines()[0]}).", path), where="review")
    return path


def working_folder(path) -> Path:
    """The working folder (one per upload or batch) that holds the database at ``path``."""
    return REVIEW_DIR / Path(path).resolve().relative_to(REVIEW_DIR.resolve()).parts[0]


def latest_review_id(db) -> int:
    """The id of the latest review in the database (0: none); a review made later has a higher one."""
    return max((review.id for review in latest_reviews(db).values()), default=0)


def _latest_review_id_of(db_path) -> int:
    with StationLog(db_path, create=False) as db:
        return latest_review_id(db)


def working_copy(upload: Path) -> Path:
    """The working copy of an uploaded database or station zip (made once per uploaded content)."""
    folder = REVIEW_DIR / sha256_file(upload)[:24]
    if not folder.is_dir():
        tmp = REVIEW_DIR / f".{folder.name}.{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        try:
            if upload.suffix.lower() == ".zip":
                unzip_station(upload, tmp)
            else:
                shutil.copyfile(upload, tmp / upload.name)
            os.replace(tmp, folder)
            remove_old_copies(REVIEW_DIR, _latest_review_id_of)
        except OSError:
            if not folder.is_dir():  # not another request's copy of the same upload that won the race
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        return _the_database(folder, upload.name)
    except gr.Error:
        shutil.rmtree(folder, ignore_errors=True)  # of no use: the next upload of it is refused the same way
        raise


def _the_database(folder: Path, name: str) -> Path:
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in DB_SUFFIXES and p.is_file())
    if len(found) != 1:
        what = "no station database" if not found else f"{len(found)} databases"
        raise refusal(f"{name}: {what} in the upload; zip one station folder (its .sqlite and crops folder).",
                      where="review")
    return found[0]


# --------------------------------------------------------------------------- the Batch tab's batches

BATCH_SOURCE = "batch upload"
NO_BATCH = ("No batch to review: classify images in the Batch tab first (Classify all), then review them; a batch "
            "with no readable image has no cells to review.")
#: The latest batch of each browser or API session (its session hash), most recent last; the oldest are forgotten.
_batches: OrderedDict[str, str] = OrderedDict()
_batches_lock = threading.Lock()
MAX_REMEMBERED_BATCHES = 1000


def write_batch(files, clf) -> Path:
    """Write a batch as one station session (cell mode, source "batch upload") in a new database of the review
    folder. ``files``: (file name, image path, prediction, error) per file, in order; a classified file's image
    is saved as its cell's crop, one it could not read is logged as an ``invalid`` frame with its error.
    Returns the database's path."""
    folder = REVIEW_DIR / f"batch-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    crops = folder / "batch-crops"
    crops.mkdir(parents=True)
    spec = clf.spec
    with StationLog(folder / "batch.sqlite") as db:
        session = db.open_session(model_name=spec.name, model_sha256=spec.sha256, labels=spec.labels,
                                  source=BATCH_SOURCE, mode="cell", config={"files": len(files)}, counted=spec.counted_labels)
        for index, (name, path, pred, error) in enumerate(files):
            if pred is None:
                frame = Frame(image=None, index=index, name=name, timestamp=time.time())
                db.add_frame(session.id, frame=frame, status="invalid", sharpness=None, found=0, classified=0,
                             detail=error or "")
                continue
            frame = Frame(image=load_image(path), index=index, name=name, timestamp=time.time())
            db.add_cell(session.id, frame=frame, index_in_frame=0, crop=whole_frame(frame.image), prediction=pred,
                        model_sha256=spec.sha256, crops_dir=crops, source_sha256=sha256_file(Path(path)))
            db.add_frame(session.id, frame=frame, status="classified", sharpness=None, found=1, classified=1)
        db.close_session(session.id, stop_reason="source ended", summary={"frames": len(files)})
    mark_reviews(folder, 0)  # no review yet: an old batch never reviewed may be removed (review_files)
    return folder / "batch.sqlite"


def remember_batch(session, db_path) -> None:
    """``session``'s latest batch is the database at ``db_path`` (None: it has none to review; no session: nothing
    to remember it by)."""
    if not session:
        return
    with _batches_lock:
        _batches.pop(session, None)
        if db_path is not None:
            _batches[session] = database_id(db_path)
        while len(_batches) > MAX_REMEMBERED_BATCHES:
            _batches.popitem(last=False)


def batch_database(session) -> Path:
    """The database of ``session``'s latest batch; a clear refusal when it has none (or it is gone)."""
    with _batches_lock:
        database = _batches.get(session) if session else None
    if database is None:
        raise refusal(NO_BATCH, where="review")
    return resolve_database(database)
