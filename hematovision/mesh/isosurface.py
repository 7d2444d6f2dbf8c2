"""The isosurface of a z-stack as a :class:`~hematovision.mesh.Mesh` (marching cubes, scikit-image).

Numpy + OpenCV at import time; scikit-image, tifffile and Open3D are imported
inside the functions. The stack is read by :mod:`hematovision.mesh.zstack`, which checks
its layout and voxel budget from the TIFF header and reduces it to the
analysis resolution while it reads, so memory is bounded whatever the file.
"""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np

from ..cells import stain
from ..errors import InvalidImageError, MissingDependencyError
from . import Mesh
from .post import SMOOTH_ITERATIONS, MeshOptions, MeshResult, decimation_input_faces, postprocess
from .zstack import load_zstack

#: Voxel size (z, y, x) when none is given: the mesh is then in source voxels.
UNIT_SPACING = (1.0, 1.0, 1.0)
#: Post-processing of a z-stack isosurface: the triangle budget and Taubin smoothing.
ZSTACK_OPTIONS = MeshOptions(smooth_iterations=SMOOTH_ITERATIONS)


def mesh_from_zstack(stack_or_path, *, spacing: tuple[float, float, float] = UNIT_SPACING,
                     level: float | None = None, options: MeshOptions = ZSTACK_OPTIONS) -> Mesh:
    """The mesh of :func:`zstack_surface` (same arguments)."""
    return zstack_surface(stack_or_path, spacing=spacing, level=level, options=options).mesh


def zstack_surface(stack_or_path, *, spacing: tuple[float, float, float] = UNIT_SPACING,
                   level: float | None = None, options: MeshOptions = ZSTACK_OPTIONS) -> MeshResult:
    """Isosurface of a z-stack (a multi-page TIFF path, a (Z, Y, X) array or a ZStack) and how it was post-processed.

    The stack is first brought to the analysis resolution
    (:func:`hematovision.mesh.zstack.load_zstack`; a TIFF is validated from its
    header before anything is decoded); the voxel size is then ``spacing``
    times the reduction factor, so the mesh stays in source units. It is
    normalised to [0, 1] (0.5th-99.5th percentile), blurred (Gaussian, 1
    voxel), thresholded at ``level`` (in [0, 1] of the normalised stack;
    None: Otsu), zero-padded so the surface closes at the borders, and meshed
    with marching cubes (scikit-image) at the voxel ``spacing`` (z, y, x).
    Then :func:`hematovision.mesh.post.postprocess` brings it to
    ``options.decimate_to`` triangles (the marching step is coarsened first
    when the mesh is 4x or more over what the engine decimates from: the
    budget for numpy clustering, 200k faces for Open3D's quadric decimation)
    and Taubin-smooths it (volume-preserving); each vertex is then coloured
    (viridis) by the stack intensity one voxel inside the surface. Vertices
    are (x, y, z) in spacing units, centred.

    Raises:
        MissingDependencyError: scikit-image (or, for a file, tifffile; or, for engine="open3d", Open3D) is missing.
        ZStackTooLargeError: a TIFF over the voxel budget (says how to crop or downsample it).
        ZStackError / InvalidImageError: not a 3D stack (a single page, channels...), or a constant one.
        ValueError: bad ``spacing`` / ``level``; nothing above ``level``.
    """
    spacing = _check_spacing(spacing)
    if level is not None and not 0.0 < float(level) < 1.0:
        raise ValueError(f"level is a fraction of the normalised intensity, in (0, 1); got {level}.")
    try:
        from skimage.measure import marching_cubes  # noqa: PLC0415
    except ImportError as exc:
        raise MissingDependencyError("z-stack meshes need scikit-image: pip install scikit-image") from exc
    zstack = load_zstack(stack_or_path)
    spacing = tuple(s * k for s, k in zip(spacing, zstack.scale))  # one analysis voxel, in source units
    vol = normalise_stack(zstack.voxels)
    smooth = gaussian_3d(vol, 1.0)
    level = stain.otsu_threshold(smooth) if level is None else float(level)
    if not (smooth.min() < level < smooth.max()):
        raise ValueError(f"no surface at level {level:.3g}: the normalised stack spans "
                         f"[{smooth.min():.3g}, {smooth.max():.3g}]; pick a level inside.")
    raw = _march(marching_cubes, smooth, level, spacing, decimation_input_faces(options.engine, options.decimate_to))
    del smooth
    result = postprocess(raw, options=options)  # Open3D, if used, loads here: after the marching's peak of memory
    mesh = result.mesh
    colors = _intensity_colors(vol, mesh, spacing)
    centre = (mesh.vertices.min(axis=0) + mesh.vertices.max(axis=0)) / 2.0
    return replace(result, mesh=Mesh(mesh.vertices - centre, mesh.faces, colors))


def _march(marching_cubes, smooth: np.ndarray, level: float, spacing, max_faces: int) -> Mesh:
    """Marching cubes on the zero-padded stack (closed at the borders), outward faces, (x, y, z) vertices."""
    verts, faces, _, _ = marching_cubes(np.pad(smooth, 1), level, spacing=spacing, allow_degenerate=False)
    pad = 1
    step = int(math.sqrt(len(faces) / max_faces))  # faces scale as 1 / step^2
    while step >= 2:  # far over: a coarser marching step is the cheapest decimation
        coarse = _march_coarse(marching_cubes, smooth, level, spacing, step)
        if coarse is not None:
            (verts, faces), pad = coarse, step
            break
        step -= 1  # the object is smaller than the step: no surface at that step; a finer one
    verts = verts - pad * np.asarray(spacing)  # undo the pad
    xyz = verts[:, ::-1].astype(np.float32)  # (z, y, x) -> (x, y, z)
    mesh = Mesh(xyz, faces, np.zeros((len(xyz), 3), np.uint8))
    if mesh.volume() < 0:  # the axis swap mirrors the mesh: restore outward winding
        mesh = replace(mesh, faces=mesh.faces[:, ::-1])
    return mesh


def _march_coarse(marching_cubes, smooth: np.ndarray, level: float, spacing, step: int):
    """``(verts, faces)`` marched every ``step`` voxels, or None when that grid misses the surface."""
    # Pad by one step, and to a whole number of steps, so that the coarse grid also samples
    # the zero border on every side and the surface stays closed.
    widths = [(step, step + (-(n + 2 * step - 1)) % step) for n in smooth.shape]
    try:
        verts, faces, _, _ = marching_cubes(np.pad(smooth, widths), level, spacing=spacing, step_size=step,
                                            allow_degenerate=False)
    except RuntimeError:  # scikit-image: "No surface found at the given iso value"
        return None
    return (verts, faces) if len(faces) else None


def normalise_stack(stack: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] by the 0.5th and 99.5th percentiles (robust to hot pixels)."""
    stack = np.asarray(stack, np.float32)
    if not np.all(np.isfinite(stack)):
        raise InvalidImageError("the z-stack contains NaN or infinite values.")
    lo, hi = np.percentile(stack, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(stack.min()), float(stack.max())
    if hi <= lo:
        raise InvalidImageError("the z-stack is constant: there is no object to mesh.")
    return np.clip((stack - lo) / (hi - lo), 0.0, 1.0)


def gaussian_3d(vol: np.ndarray, sigma: float) -> np.ndarray:
    """Separable 3D Gaussian blur (in-plane with OpenCV per slice, then along z)."""
    out = np.stack([cv2.GaussianBlur(s, (0, 0), sigma) for s in vol])
    z, y, x = out.shape
    flat = out.reshape(z, y * x)
    k = int(2 * math.ceil(3 * sigma) + 1)
    # ksize (1, k) blurs along rows only (axis 0 = z); OpenCV reflects at the ends.
    flat = cv2.GaussianBlur(flat, (1, k), sigmaX=1e-6, sigmaY=sigma) if z > 1 else flat
    return flat.reshape(z, y, x)


def _intensity_colors(vol: np.ndarray, mesh: Mesh, spacing) -> np.ndarray:
    # Sample one voxel inside the surface (the isosurface itself is all ~level).
    normals = mesh.vertex_normals()
    zyx = (mesh.vertices[:, ::-1] - normals[:, ::-1] * np.asarray(spacing, np.float32)) / np.asarray(spacing)
    idx = np.rint(zyx).astype(np.int64)
    for axis in range(3):
        np.clip(idx[:, axis], 0, vol.shape[axis] - 1, out=idx[:, axis])
    values = vol[idx[:, 0], idx[:, 1], idx[:, 2]]
    lo, hi = np.percentile(values, [2, 98]) if values.size else (0.0, 1.0)
    scaled = np.clip((values - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    bgr = cv2.applyColorMap(np.rint(scaled * 255).astype(np.uint8).reshape(-1, 1), cv2.COLORMAP_VIRIDIS)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).reshape(-1, 3)


def _check_spacing(spacing) -> tuple[float, float, float]:
    if spacing is None:  # the CLI without --spacing
        return UNIT_SPACING
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be three positive numbers (z, y, x), got {spacing!r}.")
    return values
