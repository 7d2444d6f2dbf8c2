"""The 2.5D surface of a cell in a stained image, as a :class:`~hematovision.mesh.Mesh`.

Numpy + OpenCV at import time. A height field over the segmented cell only,
in units of the cell's bounding-box side (the mesh spans about 1 x 1), x
right, y up, z towards the viewer (glTF is y-up). Post-processing (the
triangle budget, optional smoothing) goes through
:func:`hematovision.mesh.post.postprocess`, so the Open3D engine is used on
a server where it is installed and numpy elsewhere.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..cells import stain
from ..images import ImageInput, load_image
from . import Mesh
from .post import MeshOptions, MeshResult, decimation_input_faces, postprocess
from ..cells.segmentation import segment
from ..cells.shape import equivalent_diameter

#: Height of the image surface relative to the cell's equivalent diameter.
HEIGHT_RATIO = 0.35
#: Share of the height that comes from the dome (distance to the cell border);
#: the rest comes from the stain density (the nucleus stands out).
DOME_SHARE = 0.7
#: Post-processing of a cell surface: the triangle budget and no smoothing (the height field is
#: already smoothed by a masked Gaussian, and smoothing would pull the open border inwards).
IMAGE_OPTIONS = MeshOptions(smooth_iterations=0)


def mesh_from_image(image: ImageInput, *, color: str = "image", cam: np.ndarray | None = None,
                    options: MeshOptions = IMAGE_OPTIONS, segmentation=None) -> Mesh:
    """The mesh of :func:`image_surface` (same arguments)."""
    return image_surface(image, color=color, cam=cam, options=options, segmentation=segmentation).mesh


def image_surface(image: ImageInput, *, color: str = "image", cam: np.ndarray | None = None,
                  options: MeshOptions = IMAGE_OPTIONS, segmentation=None) -> MeshResult:
    """A 2.5D surface over the segmented cell of a stained image, and how it was post-processed.

    Height = ``HEIGHT_RATIO`` x cell diameter x (``DOME_SHARE`` x dome +
    (1 - ``DOME_SHARE``) x stain density), where the dome is a hemisphere
    profile of the distance to the cell border, sqrt(2u - u^2) with u = distance
    / max distance, and the density is the optical density normalised to its
    99th percentile in the cell; smoothed by a masked (normalised) Gaussian.
    Two triangles per grid square inside the cell. The numpy engine subsamples
    the pixel grid until the mesh fits ``options.decimate_to``; the Open3D
    engine keeps the grid fine (up to
    :data:`~hematovision.mesh.post.QUADRIC_INPUT_FACES` faces) and
    quadric-decimates it to the budget, which keeps the shape far better
    (docs/mesh.md). A cell under the budget is the same mesh with either.

    Args:
        color: ``"image"`` (vertex colours from the image) or ``"cam"``
            (``cam``, a float (H, W) map in [0, 1], coloured with JET).
        options: triangle budget, smoothing and engine (:class:`~hematovision.mesh.post.MeshOptions`).
        segmentation: a :class:`hematovision.cells.morphology.Segmentation` of this
            image; by default the cell nearest the centre is segmented.

    Raises:
        SegmentationError: no cell in the image.
        ValueError: bad ``color`` / ``cam``.
        MissingDependencyError: ``engine="open3d"`` without a working Open3D.
    """
    if color not in ("image", "cam"):
        raise ValueError(f"color must be 'image' or 'cam', got {color!r}.")
    rgb = load_image(image)
    heat = _check_cam(cam, rgb.shape[:2]) if color == "cam" else None
    seg = segment(rgb) if segmentation is None else segmentation
    x0, y0, x1, y1 = seg.bbox
    x0, y0, x1, y1 = max(0, x0 - 1), max(0, y0 - 1), min(rgb.shape[1], x1 + 1), min(rgb.shape[0], y1 + 1)
    mask = seg.cell_mask[y0:y1, x0:x1]
    crop = rgb[y0:y1, x0:x1]
    colors = crop if heat is None else cam_colors(heat[y0:y1, x0:x1])
    mesh = _fitted_grid(mask, _height_field(crop, mask), colors,
                        decimation_input_faces(options.engine, options.decimate_to))
    # Centre on the cell and scale to unit bounding-box side.
    side = float(max(x1 - x0, y1 - y0))
    v = mesh.vertices.copy()
    v[:, 0] = (v[:, 0] - (x1 - x0) / 2.0) / side
    v[:, 1] = -(v[:, 1] - (y1 - y0) / 2.0) / side
    v[:, 2] = v[:, 2] / side
    return postprocess(Mesh(v, mesh.faces, mesh.colors), options=options)


def _fitted_grid(mask: np.ndarray, height: np.ndarray, colors: np.ndarray, max_faces: int) -> Mesh:
    """The finest grid mesh (smallest pixel step) with at most ``max_faces`` triangles.

    Never an empty mesh while the cell holds a 2 x 2 pixel square: when a grid that fits the budget is too
    coarse to hold any square of the cell, the coarsest grid that holds one (post-processing decimates it).
    """
    step = max(1, math.ceil(math.sqrt(2.0 * int(mask.sum()) / max_faces)))
    mesh = _grid_mesh(mask, height, colors, step)
    while mesh.n_faces == 0 and step > 1:  # too coarse for the cell
        step -= 1
        mesh = _grid_mesh(mask, height, colors, step)
    while mesh.n_faces > max_faces:
        coarser = _grid_mesh(mask, height, colors, step + 1)
        if coarser.n_faces == 0:
            return mesh
        mesh, step = coarser, step + 1
    return mesh


def cam_colors(cam: np.ndarray) -> np.ndarray:
    """A [0, 1] map -> RGB uint8 with the JET colour map (the same as the 2D overlay)."""
    from ..cam import heatmap

    return heatmap(cam)


def _check_cam(cam, shape: tuple[int, int]) -> np.ndarray:
    if cam is None:
        raise ValueError("color='cam' needs cam=, a float (H, W) heatmap in [0, 1] (Prediction.cam).")
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2 or not np.all(np.isfinite(cam)):
        raise ValueError(f"cam must be a finite 2D float array, got shape {cam.shape}.")
    if cam.shape != shape:
        cam = cv2.resize(cam, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(cam, 0.0, 1.0)


def _height_field(crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m8 = mask.astype(np.uint8)
    dist = cv2.distanceTransform(np.pad(m8, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    u = dist / max(float(dist.max()), 1e-6)
    dome = np.sqrt(np.clip(2.0 * u - u * u, 0.0, 1.0))
    density = stain.stain_density(crop)
    top = float(np.percentile(density[mask], 99)) if mask.any() else 1.0
    density = np.clip(density / max(top, 1e-6), 0.0, 1.0)
    diameter = equivalent_diameter(max(1, int(mask.sum())))
    raw = HEIGHT_RATIO * diameter * (DOME_SHARE * dome + (1.0 - DOME_SHARE) * density)
    # Normalised convolution: blur(h * m) / blur(m) smooths inside the cell without
    # pulling the border down towards the zero outside.
    sigma = max(1.0, diameter / 40.0)
    num = cv2.GaussianBlur((raw * mask).astype(np.float32), (0, 0), sigma)
    den = cv2.GaussianBlur(m8.astype(np.float32), (0, 0), sigma)
    smooth = np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0)
    return (smooth * np.minimum(1.0, dome * 4.0)).astype(np.float32)  # back to 0 right at the border


def _grid_mesh(mask: np.ndarray, height: np.ndarray, colors: np.ndarray, step: int) -> Mesh:
    """Two triangles per ``step``-pixel grid square whose four corners lie in ``mask``."""
    rows = np.arange(0, mask.shape[0], step)
    cols = np.arange(0, mask.shape[1], step)
    inside = mask[np.ix_(rows, cols)]
    quad = inside[:-1, :-1] & inside[1:, :-1] & inside[:-1, 1:] & inside[1:, 1:]
    used = np.zeros_like(inside)
    used[:-1, :-1] |= quad
    used[1:, :-1] |= quad
    used[:-1, 1:] |= quad
    used[1:, 1:] |= quad
    index = np.full(inside.shape, -1, np.int64)
    index[used] = np.arange(int(used.sum()))
    rr, cc = np.nonzero(used)
    r_px, c_px = rows[rr], cols[cc]
    vertices = np.stack([c_px, r_px, height[r_px, c_px]], axis=1).astype(np.float32)
    qr, qc = np.nonzero(quad)
    a, b = index[qr, qc], index[qr, qc + 1]  # top-left, top-right
    c, d = index[qr + 1, qc], index[qr + 1, qc + 1]  # bottom-left, bottom-right
    # Counter-clockwise seen from +z once y is flipped to point up: (a, c, b), (b, c, d).
    faces = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)]).astype(np.int32)
    return Mesh(vertices, faces, colors[r_px, c_px])

