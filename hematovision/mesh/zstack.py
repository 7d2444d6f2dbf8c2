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
the functions. :func:`is_zstack` falls back to Pillow when it is missing. The
header checks and the page decoder live in :mod:`hematovision.mesh.tiff`; their
limits and :class:`StackLayout` are importable from here too.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from ..errors import HematoVisionError, InvalidImageError, ZStackError
from .tiff import (READ_ERRORS, existing_file, first_line, grey_pages, open_tiff, page_count, page_count_pillow,
                   read_layout)
# The header limits and the layout type, importable from here as before the TIFF reading moved to .tiff:
from .tiff import HOW_TO_SHRINK, MAX_PAGE_BYTES, MAX_PAGES, MAX_VOXELS, MIN_PAGES, Z_AXES, StackLayout  # noqa: F401

#: Longest in-plane side of the analysis stack (pixels); larger pages are area-averaged down.
ANALYSIS_SIDE = 256
#: Voxels of the analysis stack (e.g. 128 x 256 x 256); more planes are averaged in runs along z.
#: Meshing takes about 35 bytes per analysis voxel: some 300 MB at this budget.
ANALYSIS_VOXELS = 2 ** 23


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
        return page_count_pillow(path) >= MIN_PAGES
    with open_tiff(path) as (tif, _):
        return page_count(tif, path) >= MIN_PAGES


def inspect_zstack(path: str | Path, *, max_voxels: int = MAX_VOXELS) -> StackLayout:
    """Validate a z-stack TIFF from its header (see the module docstring) and return its layout.

    Raises:
        ImageNotFoundError: no such file.
        ZStackTooLargeError: over the page, page-size or voxel budget (``max_voxels``).
        ZStackError: not a z-stack (a single page, channels, time points, pages of different sizes).
        InvalidImageError: not a readable TIFF.
        MissingDependencyError: tifffile is not installed.
    """
    path = existing_file(path)
    with open_tiff(path) as (tif, log):
        return read_layout(tif, str(path), log, max_voxels=int(max_voxels))


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
    path = existing_file(stack)
    with open_tiff(path) as (tif, log):
        layout = read_layout(tif, str(path), log, max_voxels=int(max_voxels))
        shape = (layout.pages, layout.height, layout.width)
        try:
            return reduce_planes(grey_pages(tif, layout), shape, analysis_voxels=budget, analysis_side=side)
        except HematoVisionError:
            raise
        except READ_ERRORS as exc:
            raise InvalidImageError(f"{path}: the z-stack data is corrupt or truncated ({first_line(exc)}); "
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


def _reduction(z: int, h: int, w: int, *, side: int, voxels: int) -> tuple[int, int, int]:
    """(kz, height', width'): z run length and in-plane size of the analysis stack."""
    if side < 2 or voxels < 8:
        raise ValueError(f"analysis_side must be >= 2 and analysis_voxels >= 8, got {side} and {voxels}.")
    f = min(1.0, side / max(h, w))  # in-plane scale: the longer side becomes `side`
    h_out, w_out = max(2, round(h * f)), max(2, round(w * f))
    z_max = max(2, voxels // (h_out * w_out))  # planes that fit the voxel budget
    return max(1, math.ceil(z / z_max)), h_out, w_out
