"""Inputs and workers shared by ``classify`` and ``archive``.

:func:`expand` turns command-line paths into :class:`Item` rows: folders
expand to their image files (sorted), and a path that cannot be an image (an
empty folder, a folder without images, a FIFO, a device, a symlink loop) becomes
an item with its reason, so it gets its own error row instead of being skipped.
:func:`iter_rows` classifies items in order, in this process (``workers=1``) or
in a process pool with one classifier per worker; the rows are the same either way.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import re
import stat
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import HematoVisionError, ImageNotFoundError, InvalidImageError
from ..images import IMAGE_SUFFIXES
from ..runtime import available_cores
# A non-UTF-8 file name (held by Python with surrogates, which JSON readers and Parquet refuse) as valid UTF-8,
# its odd bytes as \xNN; the same name always gives the same text, so a resumed archive recognises it. One
# conversion for the station log, the JSON lines and the archive.
from ..station.schema import storable as printable

#: Pillow names the file object in some messages (``<_io.BytesIO object at 0x...>``): not a stable error text.
_IO_REPR = re.compile(r" ?<_io\.[A-Za-z]+ [^>]*>")
_SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


@dataclass(frozen=True)
class Item:
    """One input: a file to classify, or a path refused up front with ``problem`` (its error row)."""

    path: Path
    problem: str | None = None


@dataclass(frozen=True)
class Task:
    """What a worker needs for one item: its position (for the CAM file name) and options."""

    index: int
    item: Item
    cam_dir: Path | None = None
    archive: bool = False  # the archive's row: the file's bytes decoded (as the Ray engine does), plus "ood_score"


def default_workers() -> int:
    """Every core this process may run on."""
    return available_cores()


def expand(paths: list[str], *, recursive: bool = False) -> list[Item]:
    """Folders -> their image files (sorted; subfolders only with ``recursive``); other paths as given."""
    out: list[Item] = []
    for text in paths:
        path = Path(text)
        out.extend(_folder_items(path, recursive=recursive) if _is_dir(path) else [Item(path)])
    return out


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a symlink loop raises on some Pythons
        return False


def _folder_items(folder: Path, *, recursive: bool) -> list[Item]:
    try:
        entries = sorted(folder.rglob("*") if recursive else folder.iterdir())
    except OSError as exc:
        return [Item(folder, f"{folder}: cannot list the folder ({exc.strerror or exc}); check its permissions.")]
    images = [Item(p) for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not _is_dir(p)]
    return images or [Item(folder, _no_images(folder, entries, recursive=recursive))]


def _no_images(folder: Path, entries: list[Path], *, recursive: bool) -> str:
    suffixes = ", ".join(IMAGE_SUFFIXES)
    named_like_image = folder.suffix.lower() in IMAGE_SUFFIXES
    if named_like_image:
        head = f"{folder}: is a folder, not an image file (its name ends in {folder.suffix}), and holds no images"
    elif not entries:
        return f"{folder}: the folder is empty; put the images ({suffixes}) in it or pass their paths."
    else:
        head = f"{folder}: no image files in this folder"
    dirs = sum(_is_dir(p) for p in entries)
    files = [p for p in entries if not _is_dir(p)]
    found = [f"{len(files)} other file(s), e.g. {files[0].name}" if files else "",
             f"{dirs} subfolder(s), not searched" if dirs and not recursive else ""]
    found_text = "; ".join(x for x in found if x) or "it is empty"
    return f"{head} ({found_text}); images end in {suffixes}."


def path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an image file before it is opened (a FIFO would block), or None."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path}: is a symbolic link loop (it points back to itself); fix or remove the link."
        if path.is_symlink():
            return f"{path}: is a broken symbolic link (to {_link_target(path)}); the file it points to does not exist."
        return None  # load_image reports a missing file; open() reports permissions
    kind = next((what for test, what in _SPECIAL if test(mode)), None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else "a special file")
    return f"{path}: is {kind}, not an image file; pass a regular image file." if kind else None


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def row_key(path: Path | str) -> str:
    """The ``path`` a row names ``path`` by (:func:`printable`)."""
    return printable(str(path))


def classify_item(clf, task: Task) -> dict:
    """One JSON row: ``{"path", "label", ...}`` or ``{"path", "error"}`` with a one-line reason (valid UTF-8)."""
    row = _classify_item(clf, task)
    return {k: printable(v) if k in ("path", "error") and isinstance(v, str) else v for k, v in row.items()}


def _classify_item(clf, task: Task) -> dict:
    path = task.item.path
    try:
        problem = task.item.problem or path_problem(path)
        if problem:
            return {"path": str(path), "error": problem}
        if task.archive:
            return classify_bytes(clf, str(path), _read(path))
        pred = clf.predict(path, cam=task.cam_dir is not None)
        if task.cam_dir is not None:
            write_overlay(path, pred.cam, task.cam_dir / f"{task.index:05d}_{path.stem}_cam.png")
    except (HematoVisionError, OSError) as exc:
        return {"path": str(path), "error": first_line(exc)}
    return {"path": str(path), **pred.to_json()}


def _read(path: Path) -> bytes:
    if not path.exists():
        raise ImageNotFoundError(f"{path}: no such file; check the path.")
    return path.read_bytes()


def classify_bytes(clf, path: str, data: bytes) -> dict:
    """The archive's row for a file's bytes (both engines): the prediction and its OOD score, or the error."""
    try:
        if not data:
            raise InvalidImageError(f"{path}: the file is empty (0 bytes).")
        pred = clf.predict(data, cam=False)
    except (HematoVisionError, OSError) as exc:
        return {"path": path, "error": _IO_REPR.sub("", first_line(exc)).replace("the image bytes", path, 1)}
    return {"path": path, **pred.to_json(), "ood_score": pred.ood_score}


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def write_overlay(path: Path, cam, out: Path) -> None:
    import cv2

    from ..cam import overlay
    from ..images import load_image

    # Encoded here and written by Python: cv2.imwrite fails silently on an unwritable folder (and crashes on a
    # non-UTF-8 name); a write error is an OSError, the input's error row.
    ok, png = cv2.imencode(".png", cv2.cvtColor(overlay(load_image(path), cam), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{out}: could not encode the Grad-CAM overlay as PNG.")
    out.write_bytes(png.tobytes())


# --- the process pool: one classifier per worker, loaded by the initializer -------------------------------------
_WORKER: dict = {}


def _init_worker(model: str, threads: int | None) -> None:
    from ..classifier import load_model

    inherited = _WORKER.pop("inherited", None)
    _WORKER["clf"] = inherited if inherited is not None else load_model(model, num_threads=threads)


def _work(task: Task) -> dict:
    return classify_item(_WORKER["clf"], task)


def _context():
    """fork while this process runs no other Python thread (workers start in milliseconds, modules already
    imported; the idle native pools of OpenBLAS/OpenCV are fork-safe), else forkserver (workers fork from a
    clean server, e.g. inside a threaded web app), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["hematovision.classifier", "hematovision.commands._pool"])
        return ctx
    return multiprocessing.get_context("spawn")


def iter_rows(tasks: list[Task], *, clf, model: str, threads: int | None = None, workers: int = 1) -> Iterator[dict]:
    """The row of every task, in order. ``clf`` serves ``workers=1``; each pool worker loads ``model`` itself."""
    workers = max(1, min(workers, len(tasks)))
    if workers == 1:
        yield from (classify_item(clf, task) for task in tasks)
        return
    chunk = max(1, min(16, len(tasks) // (workers * 8)))
    ctx = _context()
    # A forked worker inherits this process's loaded classifier (copy-on-write) instead of loading the model
    # again; only a single-threaded interpreter (a forked child has none of its parent's pool threads).
    if ctx.get_start_method() == "fork" and (threads or 1) == 1:
        _WORKER["inherited"] = clf
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(model, threads)) as pool:
            yield from pool.map(_work, tasks, chunksize=chunk)
    finally:
        _WORKER.pop("inherited", None)
