"""Read a z-stack TIFF at a bounded analysis resolution, or refuse it clearly.

A z-stack is a TIFF of at least :data:`MIN_PAGES` pages (one plane each, in
z order), all of the same size and type. What is checked, in this order,
from the header alone (no pixel data is decoded):

* the page count (at most :data:`MAX_PAGES`) and the decoded size of one page
  (at most :data:`MAX_PAGE_BYTES`);
* the layout: tifffile's series axes (which carry ImageJ and OME metadata)
  have at most one stack axis, and it is z (``Z``) or unnamed (``Q``/``I``);
  channels (``C``), time points (``T``) and several stack axes are refused;
  a single page is a 2-D image, not a stack; pages written one by one (one
  series each) are planes of one stack;
* the voxel budget: pages x height x width x samples per pixel at most
  :data:`MAX_VOXELS`, like the 2-D pixel budget of :mod:`hematovision.images`;
* every page has the first page's size, samples and dtype.

Samples per pixel: 1 is grey; 3 or 4 (RGB, RGBA) become grey as the mean of
the first three samples (alpha ignored); any other count is refused.

Then pages are decoded one at a time and reduced on the fly to at most
:data:`ANALYSIS_SIDE` pixels in-plane and :data:`ANALYSIS_VOXELS` voxels in
all, so peak memory is one page plus the reduced stack, whatever the file.

tifffile (a scikit-image dependency) reads the stacks; it is imported inside
the functions. :func:`is_zstack` falls back to Pillow when it is missing.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import threading
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
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
#: Longest in-plane side of the analysis stack (pixels); larger pages are area-averaged down.
ANALYSIS_SIDE = 256
#: Voxels of the analysis stack (e.g. 128 x 256 x 256); more planes are averaged in runs along z.
#: Meshing takes about 35 bytes per analysis voxel: some 300 MB at this budget.
ANALYSIS_VOXELS = 2 ** 23
#: Stack axes of tifffile's series that mean z: depth, or unnamed (generic / shaped series).
Z_AXES = "ZQI"
#: How to make a stack smaller, for the refusals.
HOW_TO_SHRINK = ("crop it to the cell of interest or downsample it first, e.g. in Fiji (Image > Crop; "
                 "Image > Scale with 'Process entire stack'; Image > Stacks > Tools > Reduce) or with tifffile "
                 "(tifffile.imwrite('small.tif', tifffile.imread('big.tif')[z0:z1, ::2, ::2]))")

#: What tifffile and its decoders raise on corrupt or truncated files.
_READ_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, EOFError, OverflowError, NotImplementedError,
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


@dataclass(frozen=True, eq=False)
class ZStack:
    """A z-stack at analysis resolution.

    ``voxels`` is float32 (Z, Y, X) in the source's intensity units; one of
    its voxels spans ``scale`` (z, y, x) source voxels (1, 1, 1 when the
    stack was small enough to keep as it is); ``source_shape`` is the
    (Z, Y, X) of the file or array.
    """

    voxels: np.ndarray
    scale: tuple[float, float, float]
    source_shape: tuple[int, int, int]


# --------------------------------------------------------------------------- public


def is_zstack(path: str | Path) -> bool:
    """True for a TIFF of at least :data:`MIN_PAGES` pages (the z-stack input of ``mesh``); header only."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return False
    try:
        import tifffile  # noqa: PLC0415
    except ImportError:
        return _page_count_pillow(path) >= MIN_PAGES
    with _tiff(path) as (tif, _):
        return _page_count(tif, path) >= MIN_PAGES


def inspect_zstack(path: str | Path, *, max_voxels: int = MAX_VOXELS) -> StackLayout:
    """Validate a z-stack TIFF from its header (see the module docstring) and return its layout.

    Raises:
        ImageNotFoundError: no such file.
        ZStackTooLargeError: over the page, page-size or voxel budget (``max_voxels``).
        ZStackError: not a z-stack (a single page, channels, time points, pages of different sizes).
        InvalidImageError: not a readable TIFF.
        MissingDependencyError: tifffile is not installed.
    """
    path = _existing(path)
    with _tiff(path) as (tif, log):
        return _layout(tif, str(path), log, int(max_voxels))


def load_zstack(stack, *, max_voxels: int = MAX_VOXELS, analysis_voxels: int = ANALYSIS_VOXELS,
                analysis_side: int = ANALYSIS_SIDE) -> ZStack:
    """A z-stack TIFF path (validated, see :func:`inspect_zstack`) or a (Z, Y, X) array, at analysis resolution.

    Pages are decoded one at a time and reduced at once (see :func:`reduce_planes`),
    so memory stays about one page plus the reduced stack.
    """
    side, budget = int(analysis_side), int(analysis_voxels)
    if isinstance(stack, ZStack):
        return stack
    if not isinstance(stack, (str, os.PathLike)):
        arr = np.asarray(stack)
        if arr.ndim != 3 or min(arr.shape) < 2 or arr.dtype.kind not in "biuf":
            raise ZStackError(f"a z-stack must be a real (z, y, x) array with every side >= 2, got {arr.shape} "
                              f"{arr.dtype}.")
        return reduce_planes(iter(arr), arr.shape, analysis_voxels=budget, analysis_side=side)
    path = _existing(stack)
    with _tiff(path) as (tif, log):
        layout = _layout(tif, str(path), log, int(max_voxels))
        shape = (layout.pages, layout.height, layout.width)
        try:
            return reduce_planes(_grey_pages(tif, layout), shape, analysis_voxels=budget, analysis_side=side)
        except HematoVisionError:
            raise
        except _READ_ERRORS as exc:
            raise InvalidImageError(f"{path}: the z-stack data is corrupt or truncated ({_first_line(exc)}); "
                                    "re-export or re-upload it.") from exc


def read_zstack(path: str | Path, *, max_voxels: int = MAX_VOXELS, analysis_voxels: int = ANALYSIS_VOXELS,
                analysis_side: int = ANALYSIS_SIDE) -> np.ndarray:
    """A z-stack TIFF as a float32 (Z, Y, X) array at analysis resolution (see :func:`load_zstack`)."""
    return load_zstack(Path(path), max_voxels=max_voxels, analysis_voxels=analysis_voxels,
                       analysis_side=analysis_side).voxels


def reduce_planes(planes: Iterable[np.ndarray], shape: tuple[int, int, int], *,
                  analysis_voxels: int = ANALYSIS_VOXELS, analysis_side: int = ANALYSIS_SIDE) -> ZStack:
    """Reduce a stream of ``shape[0]`` planes of ``shape[1:]`` to a :class:`ZStack`, holding one plane at a time.

    In-plane, the longer side shrinks to ``analysis_side`` by area averaging
    (each output pixel is the mean of the source pixels it covers; the aspect
    ratio is kept). Along z, runs of ``kz`` consecutive planes are averaged,
    ``kz`` the smallest that keeps Z' x Y' x X' within ``analysis_voxels``; the
    last run may be shorter (its mean sits up to kz/2 planes off the grid).
    """
    z, h, w = (int(n) for n in shape)
    kz, h_out, w_out = _reduction(z, h, w, side=analysis_side, voxels=analysis_voxels)
    out = np.empty((math.ceil(z / kz), h_out, w_out), np.float32)
    run = np.zeros((h_out, w_out), np.float32)
    count = 0
    for count, plane in enumerate(planes, start=1):
        plane = np.asarray(plane, np.float32)
        if plane.shape != (h, w) or count > z:
            raise ZStackError(f"plane {count} is {plane.shape}; expected {z} planes of {(h, w)}.")
        run += plane if (h_out, w_out) == (h, w) else cv2.resize(plane, (w_out, h_out), interpolation=cv2.INTER_AREA)
        if count % kz == 0 or count == z:  # run j = planes j*kz+1 .. count is complete: store its mean
            j = (count - 1) // kz
            out[j] = run / (count - j * kz)
            run[:] = 0.0
    if count != z:
        raise ZStackError(f"the stack gave {count} planes, its header {z}.")
    return ZStack(out, (float(kz), h / h_out, w / w_out), (z, h, w))


# --------------------------------------------------------------------------- layout from the header


def _layout(tif, where: str, log: list[str], max_voxels: int) -> StackLayout:
    n = _page_count(tif, where)
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


def _page_count(tif, where) -> int:
    n = len(tif.pages)  # walks the IFD offsets only
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


# --------------------------------------------------------------------------- reading


def _grey_pages(tif, layout: StackLayout) -> Iterator[np.ndarray]:
    """Each page decoded alone, as a float32 (height, width) plane: RGB(A) is the mean of R, G, B."""
    for page in tif.pages:
        arr = page.asarray()
        if layout.samples > 1:
            arr = np.moveaxis(arr, page.axes.index("S"), -1)[..., :3].mean(axis=-1, dtype=np.float32)
        yield arr.reshape(layout.height, layout.width)


def _reduction(z: int, h: int, w: int, *, side: int, voxels: int) -> tuple[int, int, int]:
    """(kz, height', width'): z run length and in-plane size of the analysis stack."""
    if side < 2 or voxels < 8:
        raise ValueError(f"analysis_side must be >= 2 and analysis_voxels >= 8, got {side} and {voxels}.")
    f = min(1.0, side / max(h, w))  # in-plane scale: the longer side becomes `side`
    h_out, w_out = max(2, round(h * f)), max(2, round(w * f))
    z_max = max(2, voxels // (h_out * w_out))  # planes that fit the voxel budget
    return max(1, math.ceil(z / z_max)), h_out, w_out


@contextmanager
def _tiff(path: Path):
    """tifffile.TiffFile(path), with its log messages collected (not printed) and read errors made clear."""
    try:
        import tifffile  # noqa: PLC0415
    except ImportError as exc:
        raise MissingDependencyError("z-stacks need tifffile: pip install tifffile (scikit-image installs it)") from exc
    with _collect_log() as log:
        try:
            tif = tifffile.TiffFile(path)
        except _READ_ERRORS as exc:
            hint = "" if path.suffix.lower() in (".tif", ".tiff") else "; a z-stack is a multi-page TIFF"
            raise InvalidImageError(f"{path}: not a readable TIFF ({_first_line(exc)}){hint}.") from exc
        with tif:
            try:
                yield tif, log
            except HematoVisionError:
                raise
            except _READ_ERRORS as exc:
                raise InvalidImageError(f"{path}: the TIFF header is corrupt or truncated ({_first_line(exc)}); "
                                        "re-export or re-upload it.") from exc


class _Collector(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:  # other threads' files are not ours to report
            self.messages.append(_first_line(record.getMessage()))


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


def _page_count_pillow(path: Path) -> int:
    from PIL import Image  # noqa: PLC0415

    try:
        with Image.open(path) as im:
            return int(getattr(im, "n_frames", 1))
    except Image.DecompressionBombError as exc:
        raise ZStackTooLargeError(f"{path}: {_first_line(exc)}; {HOW_TO_SHRINK}.") from exc
    except _READ_ERRORS as exc:
        raise InvalidImageError(f"{path}: not a readable TIFF ({_first_line(exc)}).") from exc


def _existing(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ImageNotFoundError(f"{path}: no such file; check the path.")
    if not path.is_file():
        raise InvalidImageError(f"{path}: is not a file; give a multi-page TIFF z-stack.")
    return path


def _first_line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
