"""Frame sources: where the station's images come from, behind one small interface.

Every source is a context manager with one method, :meth:`FrameSource.read`::

    with open_source("folder:/data/scans") as source:
        while (frame := source.read(timeout=0.5)) is not None or not source.ended:
            ...

``read`` returns the next :class:`Frame` (RGB uint8), or None when no frame
arrived within ``timeout`` seconds; ``ended`` turns True once the source will
never give another one (end of a video, a folder read with ``watch=False``).

Sources: :class:`OpenCVSource` (USB camera index or video file),
:class:`PicameraSource` (Picamera2, imported only when opened; both in
:mod:`hematovision.station.cameras`),
:class:`FolderSource` (new image files appearing in a folder: scanning
microscopes, OpenFlexure) and :class:`FakeSource` (arrays, for tests).
:func:`open_source` builds one from a ``camera:0`` / ``picamera`` /
``folder:DIR`` / ``video:FILE`` string.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import ImageNotFoundError, InvalidImageError, SourceError, SourceSpecError
from ..images import IMAGE_SUFFIXES, load_image
from .cameras import OpenCVSource, PicameraSource
from .frames import Frame, FrameSource
from .schema import storable

__all__ = ["FOLDER_SUFFIXES", "FakeSource", "FolderSource", "Frame", "FrameSource", "OpenCVSource", "PicameraSource",
           "SourceOptions", "open_source", "register_source", "source_forms"]

log = logging.getLogger(__name__)

#: What a watched folder picks up: every still-image type the core reads (an animated GIF is not a microscope frame).
FOLDER_SUFFIXES = tuple(s for s in IMAGE_SUFFIXES if s != ".gif")


class FakeSource(FrameSource):
    """Frames from a list (or any iterable) of RGB arrays; for tests and benchmarks."""

    description = "fake"

    def __init__(self, images: Iterable[np.ndarray], *, names: Iterable[str] | None = None):
        super().__init__()
        self._images = iter(images)
        self._names = iter(names) if names is not None else None

    def read(self, *, timeout: float | None = None) -> Frame | None:
        if self._ended:
            return None
        try:
            image = next(self._images)
        except StopIteration:
            self._ended = True
            return None
        name = next(self._names, None) if self._names is not None else None
        return self._frame(load_image(image), name)


class FolderSource(FrameSource):
    """Image files appearing in a folder become frames, oldest first.

    A file is taken once its size and modification time have not changed for
    ``settle`` seconds (so a half-written file is not read). Files present at
    start are read too. With ``watch=False`` the source ends when every file
    present has been read; otherwise it waits for new ones. An unreadable file
    is logged and skipped.
    """

    def __init__(self, folder: str | os.PathLike, *, watch: bool = True, poll_interval: float = 0.2,
                 settle: float = 0.5, suffixes: Iterable[str] = FOLDER_SUFFIXES):
        super().__init__()
        self.folder = Path(folder)
        self.watch = watch
        self.poll_interval = poll_interval
        self.settle = settle
        self.suffixes = tuple(s.lower() for s in suffixes)
        self.description = f"folder:{self.folder.name}"
        self._seen: set[str] = set()
        self._pending: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, first time seen stable)
        self.skipped: list[tuple[str, str]] = []

    def skip(self, names: Iterable[str]) -> None:
        self._seen.update(names)

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: not a folder; create it or check the path given to folder:DIR.")

    def read(self, *, timeout: float | None = None) -> Frame | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ended:
            path = self._next_ready()
            if path is not None:
                self._seen.add(path.name)
                try:
                    return self._frame(load_image(path), path.name)
                except (InvalidImageError, ImageNotFoundError, OSError) as exc:
                    self.skipped.append((path.name, str(exc)))
                    log.warning("skipped %s: %s", path.name, exc)
                    continue
            if not self.watch and not self._pending:
                self._ended = True
                return None
            if deadline is not None and time.monotonic() >= deadline:
                return None
            pause = self.poll_interval if deadline is None else min(self.poll_interval, max(deadline - time.monotonic(), 0.0))
            time.sleep(pause)
        return None

    def _next_ready(self) -> Path | None:
        """The oldest file whose size and mtime have been stable for ``settle`` seconds."""
        now = time.monotonic()
        ready: list[tuple[int, str, Path]] = []
        try:
            entries = list(os.scandir(self.folder))
        except OSError as exc:
            raise SourceError(f"{self.folder}: cannot list the folder ({exc}).") from exc
        for entry in entries:
            name = entry.name
            done = name in self._seen or storable(name) in self._seen  # the log keeps undecodable bytes as \xNN
            if done or name.startswith(".") or not name.lower().endswith(self.suffixes):
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                self._pending.pop(name, None)
                continue
            if not entry.is_file():
                continue
            key = (st.st_size, st.st_mtime_ns)
            first = self._pending.get(name)
            if first is None or first[:2] != key:
                # New or still changing. A file already old enough counts as settled.
                stable_since = now - (time.time() - st.st_mtime)
                self._pending[name] = (*key, stable_since)
                first = self._pending[name]
            # An empty file may still be being written while watching; without watching the
            # files present are final, so it goes to the loader, which reports it as empty.
            if (st.st_size > 0 or not self.watch) and now - first[2] >= self.settle:
                ready.append((st.st_mtime_ns, name, Path(entry.path)))
        if not ready:
            return None
        _, name, path = min(ready)
        self._pending.pop(name, None)
        return path


@dataclass(frozen=True)
class SourceOptions:
    """What ``open_source`` passes to every factory: folder watching and a requested camera resolution.

    ``width``/``height`` None keep the camera's own resolution (OpenCV) or
    Picamera2's 640x480.
    """

    watch: bool = True
    width: int | None = None
    height: int | None = None


#: kind -> (the form shown to users, factory(arg, spec, options) -> FrameSource).
_REGISTRY: dict[str, tuple[str, Callable[[str, str, SourceOptions], FrameSource]]] = {}


def register_source(kind: str, form: str):
    """Decorator: ``kind:ARG`` strings build a source with the decorated ``factory(arg, spec, options)``.

    A new camera type is one registered factory; :func:`open_source` and the
    ``--source`` help pick it up.
    """
    def add(factory):
        _REGISTRY[kind] = (form, factory)
        return factory
    return add


def source_forms() -> str:
    """The accepted forms, for help and error messages: ``camera:INDEX, picamera[:INDEX], ...``."""
    forms = [form for form, _ in _REGISTRY.values()]
    return ", ".join(forms[:-1]) + " or " + forms[-1] if len(forms) > 1 else "".join(forms)


@register_source("camera", "camera:INDEX")
def _camera(arg: str, spec: str, options: SourceOptions) -> FrameSource:
    if not arg.strip().isdigit():
        raise SourceSpecError(f"camera source needs an index, e.g. camera:0 (got {spec!r}).")
    return OpenCVSource(int(arg), width=options.width, height=options.height)


@register_source("picamera", "picamera[:INDEX]")
def _picamera(arg: str, spec: str, options: SourceOptions) -> FrameSource:
    if arg and not arg.strip().isdigit():
        raise SourceSpecError(f"picamera source takes an optional index, e.g. picamera or picamera:1 (got {spec!r}).")
    size = {k: v for k, v in (("width", options.width), ("height", options.height)) if v is not None}
    return PicameraSource(camera_index=int(arg) if arg else 0, **size)


@register_source("folder", "folder:DIR")
def _folder(arg: str, spec: str, options: SourceOptions) -> FrameSource:
    if not arg:
        raise SourceSpecError(f"folder source needs a folder, e.g. folder:/data/scans (got {spec!r}; sources: {source_forms()}).")
    return FolderSource(arg, watch=options.watch)


@register_source("video", "video:FILE")
def _video(arg: str, spec: str, options: SourceOptions) -> FrameSource:
    if not arg:
        raise SourceSpecError(f"video source needs a file, e.g. video:smear.mp4 (got {spec!r}; sources: {source_forms()}).")
    return OpenCVSource(arg)


def open_source(spec: str, *, watch: bool = True, width: int | None = None, height: int | None = None) -> FrameSource:
    """Build a source from a ``kind:ARG`` string (see :func:`source_forms`) through the registry.

    ``watch``: a folder source keeps waiting for new files; ``width``/``height``:
    the camera resolution to ask for (None: the camera's own).

    Nothing is opened yet: use the result in a ``with`` block. Raises
    :class:`SourceSpecError` (a ``ValueError``) for a malformed string.
    """
    kind, _, arg = spec.partition(":")
    entry = _REGISTRY.get(kind.strip().lower())
    if entry is None:
        raise SourceSpecError(f"unknown source {spec!r}; use one of {source_forms()}.")
    return entry[1](arg, spec, SourceOptions(watch=watch, width=width, height=height))
