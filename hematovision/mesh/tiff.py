"""The TIFF side of z-stack reading: the header checks, the page decoder, and clear errors.

:mod:`hematovision.mesh.zstack` is the public API; this module opens the file
and reads what it can from the header alone (no pixel data is decoded):

* :func:`page_count`: the number of pages (IFDs), at most :data:`MAX_PAGES`;
* :func:`read_layout`: one page's plane (2-D, grey or RGB(A), at most
  :data:`MAX_PAGE_BYTES` decoded), the series axes (one stack axis, z or
  unnamed), the voxel budget, and every page like the first;
* :func:`grey_pages`: then the pages, decoded one at a time as grey planes.

:func:`open_tiff` wraps ``tifffile.TiffFile`` so its log messages are
collected (they explain a refusal) and its read errors become
:class:`~hematovision.errors.InvalidImageError`. tifffile is imported inside
the functions; :func:`page_count_pillow` counts pages when it is missing.
"""

from __future__ import annotations

import logging
import struct
import threading
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import (HematoVisionError, ImageNotFoundError, InvalidImageError, MissingDependencyError, ZStackError,
                     ZStackTooLargeError)

#: Fewest pages of a z-stack (marching cubes needs two planes).
MIN_PAGES = 2
#: Most pages (IFDs) read from the header; a cell's z-stack has tens to hundreds.
MAX_PAGES = 2048
#: Voxel budget (pages x height x width x samples), checked from the header:
#: 64 x 2048 x 2048, or 256 x 1024 x 1024, or 1024 x 512 x 512.
MAX_VOXELS = 2 ** 28
#: Decoded bytes of one page (4096 x 4096 at 16 bits; 2048 x 2048 RGBA at 16 bits).
MAX_PAGE_BYTES = 2 ** 25
#: Stack axes of tifffile's series that mean z: depth, or unnamed (generic / shaped series).
Z_AXES = "ZQI"
#: How to make a stack smaller, for the refusals.
HOW_TO_SHRINK = ("crop it to the cell of interest or downsample it first, e.g. in Fiji (Image > Crop; "
                 "Image > Scale with 'Process entire stack'; Image > Stacks > Tools > Reduce) or with tifffile "
                 "(tifffile.imwrite('small.tif', tifffile.imread('big.tif')[z0:z1, ::2, ::2]))")

#: What tifffile and its decoders raise on corrupt or truncated files.
READ_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, EOFError, OverflowError, NotImplementedError,
               MemoryError, struct.error, zlib.error)


@dataclass(frozen=True)
class StackLayout:
    """What the TIFF header says: ``pages`` planes of ``height x width x samples`` ``dtype``."""

    pages: int
    height: int
    width: int
    samples: int
    dtype: np.dtype
    axes: str  # tifffile's series axes, e.g. "ZYX", "QYXS", or "YX+YX+..." for one series per page

    @property
    def voxels(self) -> int:
        return self.pages * self.height * self.width * self.samples


# --------------------------------------------------------------------------- layout from the header


def read_layout(tif, where: str, log: list[str], *, max_voxels: int = MAX_VOXELS) -> StackLayout:
    """The layout of an open ``tif`` (``where`` names it in errors, ``log`` holds tifffile's warnings), checked.

    Raises :class:`ZStackTooLargeError` over a budget and :class:`ZStackError`
    for anything that is not one z-stack of equal pages.
    """
    n = page_count(tif, where)
    first = tif.pages.first
    h, w, s = _plane(first, where, 1)
    axes = _check_series(tif, where, n, log)
    if n < MIN_PAGES:
        kind = {1: "grey", 3: "RGB", 4: "RGBA"}.get(s, f"{s}-sample")
        damaged = f" (or a damaged file: tifffile says {log[0]})" if log else ""
        raise ZStackError(f"{where}: a z-stack needs at least {MIN_PAGES} pages; this is a single 2-D image "
                          f"({w} x {h} {kind}){damaged}: use the Classify tab / classify command, or the 2.5D "
                          "cell view.")
    layout = StackLayout(n, h, w, s, np.dtype(first.dtype), axes)
    if layout.voxels > max_voxels:
        raise ZStackTooLargeError(
            f"{where}: {n} pages x {h} x {w}" + (f" x {s} samples" if s > 1 else "")
            + f" = {layout.voxels:,} voxels exceeds the z-stack budget of {max_voxels:,}; {HOW_TO_SHRINK}.")
    for index, page in enumerate(tif.pages, start=1):
        if page.shape != first.shape or page.dtype != first.dtype:
            raise ZStackError(f"{where}: page {index} is {page.shape} {page.dtype}, page 1 is {first.shape} "
                              f"{first.dtype}; every page of a z-stack must have the same size and type.")
    return layout


def page_count(tif, where) -> int:
    """Pages of an open ``tif`` (walks the IFD offsets only): at least one, at most :data:`MAX_PAGES`."""
    n = len(tif.pages)
    if n > MAX_PAGES:
        raise ZStackTooLargeError(f"{where}: {n:,} pages is over the z-stack budget of {MAX_PAGES:,} pages; "
                                  f"{HOW_TO_SHRINK}.")
    if n == 0:
        raise InvalidImageError(f"{where}: the TIFF has no pages; re-export it.")
    return n


def _plane(page, where: str, index: int) -> tuple[int, int, int]:
    """(height, width, samples) of one page, which must be a single 2-D plane of a supported type."""
    dims = dict(zip(page.axes, page.shape))
    if set(dims) - set("YXS") or getattr(page, "imagedepth", 1) > 1:
        raise ZStackError(f"{where}: page {index} has axes {page.axes} {page.shape}; each page of a z-stack must "
                          "be one 2-D plane. Re-save the stack one plane per page (Fiji: File > Save As > Tiff).")
    dtype = page.dtype
    if dtype is None or np.dtype(dtype).kind not in "biuf":
        raise ZStackError(f"{where}: pages of type {dtype} are not supported; save 8/16/32-bit integer or float "
                          "pages.")
    h, w, s = dims.get("Y", 1), dims.get("X", 1), dims.get("S", 1)
    if s not in (1, 3, 4):
        raise ZStackError(f"{where}: {s} samples per pixel; a z-stack page is grey (1) or RGB(A) (3, 4, "
                          "made grey as the mean of R, G, B). Save one channel (Fiji: Image > Color > Split Channels).")
    if min(h, w) < 2:
        raise ZStackError(f"{where}: pages of {w} x {h} pixels hold no object; at least 2 x 2 are needed.")
    size = h * w * s * np.dtype(dtype).itemsize
    if size > MAX_PAGE_BYTES:
        raise ZStackTooLargeError(f"{where}: one page is {w} x {h} x {s} {np.dtype(dtype)} = {size / 2**20:,.0f} "
                                  f"MiB decoded, over the per-page budget of {MAX_PAGE_BYTES // 2**20} MiB; "
                                  f"{HOW_TO_SHRINK}.")
    return h, w, s


def _check_series(tif, where: str, n_pages: int, log: list[str]) -> str:
    """The series' axes: at most one stack axis each, z or unnamed; as many planes as pages."""
    planes, names = 0, []
    for series in tif.series:
        stack = [(a, int(k)) for a, k in zip(series.axes, series.shape) if a not in "YXS" and k > 1]
        desc = " x ".join(f"{k} {a}" for a, k in stack)
        if len(stack) > 1:
            raise ZStackError(f"{where}: has axes {series.axes} ({desc}); a z-stack has one stack axis. Keep one "
                              "channel and one time point (Fiji: Image > Hyperstacks > Reduce Dimensionality).")
        if stack and stack[0][0] not in Z_AXES:
            axis, k = stack[0]
            what = {"C": "channels", "T": "time points"}.get(axis, f"planes along axis {axis}")
            raise ZStackError(f"{where}: its {k} planes are {what}, not z-slices. If they are z-slices, relabel them "
                              f"(Fiji: Image > Properties, Slices={k}, Channels=1, Frames=1); else save one z-stack.")
        planes += stack[0][1] if stack else 1
        names.append(series.axes)
    if planes != n_pages:
        hint = f" (tifffile: {log[0]})" if log else ""
        raise ZStackError(f"{where}: the header describes {planes} planes in {n_pages} pages{hint}; the file is "
                          "corrupt or truncated, or stores planes contiguously. Re-export it one plane per page "
                          "(Fiji: File > Save As > Tiff).")
    return names[0] if len(names) == 1 else "+".join(names)


# --------------------------------------------------------------------------- pages and files


def grey_pages(tif, layout: StackLayout) -> Iterator[np.ndarray]:
    """Each page decoded alone, as a float32 (height, width) plane: RGB(A) is the mean of R, G, B."""
    for page in tif.pages:
        arr = page.asarray()
        if layout.samples > 1:
            arr = np.moveaxis(arr, page.axes.index("S"), -1)[..., :3].mean(axis=-1, dtype=np.float32)
        yield arr.reshape(layout.height, layout.width)


@contextmanager
def open_tiff(path: Path):
    """tifffile.TiffFile(path) and its log, as ``(tif, log)``; log messages collected (not printed), read errors made clear."""
    try:
        import tifffile  # noqa: PLC0415
    except ImportError as exc:
        raise MissingDependencyError("z-stacks need tifffile: pip install tifffile (scikit-image installs it)") from exc
    with _collect_log() as log:
        try:
            tif = tifffile.TiffFile(path)
        except READ_ERRORS as exc:
            hint = "" if path.suffix.lower() in (".tif", ".tiff") else "; a z-stack is a multi-page TIFF"
            raise InvalidImageError(f"{path}: not a readable TIFF ({first_line(exc)}){hint}.") from exc
        with tif:
            try:
                yield tif, log
            except HematoVisionError:
                raise
            except READ_ERRORS as exc:
                raise InvalidImageError(f"{path}: the TIFF header is corrupt or truncated ({first_line(exc)}); "
                                        "re-export or re-upload it.") from exc


class _Collector(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:  # other threads' files are not ours to report
            self.messages.append(first_line(record.getMessage()))


@contextmanager
def _collect_log():
    """tifffile's warnings on this thread, as a list (they explain a refusal; without a handler they print)."""
    logger = logging.getLogger("tifffile")
    handler = _Collector()
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def page_count_pillow(path: Path) -> int:
    """Pages of a TIFF counted by Pillow (``n_frames``), for when tifffile is missing."""
    from PIL import Image  # noqa: PLC0415

    try:
        with Image.open(path) as im:
            return int(getattr(im, "n_frames", 1))
    except Image.DecompressionBombError as exc:
        raise ZStackTooLargeError(f"{path}: {first_line(exc)}; {HOW_TO_SHRINK}.") from exc
    except READ_ERRORS as exc:
        raise InvalidImageError(f"{path}: not a readable TIFF ({first_line(exc)}).") from exc


def existing_file(path) -> Path:
    """``path`` as a Path, or a clear error when it is missing or not a file."""
    path = Path(path)
    if not path.exists():
        raise ImageNotFoundError(f"{path}: no such file; check the path.")
    if not path.is_file():
        raise InvalidImageError(f"{path}: is not a file; give a multi-page TIFF z-stack.")
    return path


def first_line(exc) -> str:
    """The first line of an exception's (or any object's) text; the exception's type name when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
