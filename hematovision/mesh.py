"""3D views of cells: a 2.5D surface from a stained image, an isosurface from a z-stack.

Numpy + OpenCV at import time; scikit-image (marching cubes), tifffile and
Open3D are imported only inside the functions that need them.

Public API::

    Mesh(vertices (N, 3) float32, faces (M, 3) int32, colors (N, 3) uint8 sRGB)
    mesh_from_image(image, *, color="image", cam=None, max_triangles=None, segmentation=None) -> Mesh
    mesh_from_zstack(stack_or_path, *, spacing=None, level=None, max_triangles=None) -> Mesh
    read_zstack(path) -> (Z, Y, X) array;  is_zstack(path) -> bool
    decimate(mesh, max_triangles, *, method="cluster") -> Mesh
    taubin_smooth(mesh, *, iterations=10) -> Mesh
    write_glb(mesh, path), write_ply(mesh, path), write_obj(mesh, path), write_mesh(mesh, path)

Image meshes: a height field over the segmented cell only (see
:func:`mesh_from_image`), in units of the cell's bounding-box side (the mesh
spans about 1 x 1), x right, y up, z towards the viewer (glTF is y-up).
Z-stack meshes are in the units of ``spacing`` (um for a microscope stack;
voxels when no spacing is given), centred on the object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from . import glb, stain
from .errors import InvalidImageError, MissingDependencyError
from .images import ImageInput, load_image
from .morphology import segment

#: Triangle budget of every mesh (keeps a .glb under ~2 MB and a browser smooth).
MAX_TRIANGLES = 50_000
#: Height of the image surface relative to the cell's equivalent diameter.
HEIGHT_RATIO = 0.35
#: Share of the height that comes from the dome (distance to the cell border);
#: the rest comes from the stain density (the nucleus stands out).
DOME_SHARE = 0.7


@dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh with per-vertex sRGB colours. Faces are counter-clockwise seen from outside."""

    vertices: np.ndarray = field(repr=False)
    faces: np.ndarray = field(repr=False)
    colors: np.ndarray = field(repr=False)

    def __post_init__(self):
        object.__setattr__(self, "vertices", np.ascontiguousarray(self.vertices, np.float32).reshape(-1, 3))
        object.__setattr__(self, "faces", np.ascontiguousarray(self.faces, np.int32).reshape(-1, 3))
        object.__setattr__(self, "colors", np.ascontiguousarray(self.colors, np.uint8).reshape(-1, 3))
        if len(self.colors) != len(self.vertices):
            raise ValueError(f"{len(self.colors)} colours for {len(self.vertices)} vertices; give one per vertex.")
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= len(self.vertices)):
            raise ValueError("face indices out of range of the vertex array.")

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)

    @property
    def n_faces(self) -> int:
        return len(self.faces)

    def __repr__(self) -> str:
        return f"Mesh({self.n_vertices} vertices, {self.n_faces} faces)"

    def face_normals(self, *, unit: bool = True) -> np.ndarray:
        v = self.vertices.astype(np.float64)
        f = self.faces
        n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        if unit:
            n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
        return n

    def vertex_normals(self) -> np.ndarray:
        """Unit normals: the area-weighted sum of the adjacent face normals."""
        fn = self.face_normals(unit=False)  # length = 2 x area: area weighting for free
        out = np.zeros((self.n_vertices, 3))
        for k in range(3):
            for corner in range(3):
                out[:, k] += np.bincount(self.faces[:, corner], weights=fn[:, k], minlength=self.n_vertices)
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.where(norm > 0, out / np.maximum(norm, 1e-30), [0.0, 0.0, 1.0])
        return out.astype(np.float32)

    def surface_area(self) -> float:
        return float(0.5 * np.linalg.norm(self.face_normals(unit=False), axis=1).sum())

    def volume(self) -> float:
        """Signed enclosed volume (divergence theorem: sum of v0 . (v1 x v2) / 6); > 0 for outward faces."""
        v = self.vertices.astype(np.float64)
        f = self.faces
        return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0)


# --------------------------------------------------------------------------- 2D image -> 2.5D surface


def mesh_from_image(image: ImageInput, *, color: str = "image", cam: np.ndarray | None = None,
                    max_triangles: int | None = None, segmentation=None) -> Mesh:
    """A 2.5D surface over the segmented cell of a stained image.

    Height = ``HEIGHT_RATIO`` x cell diameter x (``DOME_SHARE`` x dome +
    (1 - ``DOME_SHARE``) x stain density), where the dome is a hemisphere
    profile of the distance to the cell border, sqrt(2u - u^2) with u = distance
    / max distance, and the density is the optical density normalised to its
    99th percentile in the cell; smoothed by a masked (normalised) Gaussian.
    The pixel grid is subsampled so that the mesh has at most ``max_triangles``
    (default :data:`MAX_TRIANGLES`) triangles; two per grid square inside the cell.

    Args:
        color: ``"image"`` (vertex colours from the image) or ``"cam"``
            (``cam``, a float (H, W) map in [0, 1], coloured with JET).
        segmentation: a :class:`hematovision.morphology.Segmentation` of this
            image; by default the cell nearest the centre is segmented.

    Raises:
        SegmentationError: no cell in the image.
        ValueError: bad ``color`` / ``cam`` / ``max_triangles``.
    """
    budget = _budget(max_triangles)
    if color not in ("image", "cam"):
        raise ValueError(f"color must be 'image' or 'cam', got {color!r}.")
    rgb = load_image(image)
    heat = _check_cam(cam, rgb.shape[:2]) if color == "cam" else None
    seg = segment(rgb) if segmentation is None else segmentation
    x0, y0, x1, y1 = seg.bbox
    x0, y0, x1, y1 = max(0, x0 - 1), max(0, y0 - 1), min(rgb.shape[1], x1 + 1), min(rgb.shape[0], y1 + 1)
    mask = seg.cell_mask[y0:y1, x0:x1]
    crop = rgb[y0:y1, x0:x1]
    height = _height_field(crop, mask)

    n_pixels = int(mask.sum())
    step = max(1, math.ceil(math.sqrt(2.0 * n_pixels / budget)))
    while True:
        mesh = _grid_mesh(mask, height, crop if heat is None else cam_colors(heat[y0:y1, x0:x1]), step)
        if mesh.n_faces <= budget:
            break
        step += 1
    # Centre on the cell and scale to unit bounding-box side.
    side = float(max(x1 - x0, y1 - y0))
    v = mesh.vertices.copy()
    v[:, 0] = (v[:, 0] - (x1 - x0) / 2.0) / side
    v[:, 1] = -(v[:, 1] - (y1 - y0) / 2.0) / side
    v[:, 2] = v[:, 2] / side
    return Mesh(v, mesh.faces, mesh.colors)


def cam_colors(cam: np.ndarray) -> np.ndarray:
    """A [0, 1] map -> RGB uint8 with the JET colour map (the same as the 2D overlay)."""
    from .cam import heatmap

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
    diameter = 2.0 * math.sqrt(max(1, int(mask.sum())) / math.pi)
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


# --------------------------------------------------------------------------- z-stack -> isosurface


def is_zstack(path: str | Path) -> bool:
    """True for a multi-page TIFF (the z-stack input of the ``mesh`` command)."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return False
    from PIL import Image

    try:
        with Image.open(path) as im:
            return getattr(im, "n_frames", 1) > 1
    except (OSError, ValueError) as exc:
        raise InvalidImageError(f"{path}: not a readable TIFF ({exc}).") from exc


def read_zstack(path: str | Path) -> np.ndarray:
    """A multi-page TIFF as a (Z, Y, X) array (tifffile when installed, else Pillow page by page)."""
    path = Path(path)
    if not path.is_file():
        from .errors import ImageNotFoundError

        raise ImageNotFoundError(f"{path}: no such file; check the path.")
    try:
        import tifffile  # noqa: PLC0415
    except ImportError:
        tifffile = None
    try:
        if tifffile is not None:
            stack = np.asarray(tifffile.imread(path))
        else:
            from PIL import Image, ImageSequence

            with Image.open(path) as im:
                stack = np.stack([np.asarray(page) for page in ImageSequence.Iterator(im)])
    except (OSError, ValueError, TypeError) as exc:  # tifffile/Pillow report corrupt files so
        raise InvalidImageError(f"{path}: not a readable TIFF z-stack ({exc}).") from exc
    if stack.ndim == 4 and stack.shape[-1] in (3, 4):
        stack = stack[..., :3].mean(axis=-1)
    if stack.ndim != 3 or min(stack.shape) < 2:
        raise InvalidImageError(f"{path}: shape {stack.shape} is not a (z, y, x) stack of at least 2 pages.")
    return stack


def mesh_from_zstack(stack_or_path, *, spacing: tuple[float, float, float] | None = None,
                     level: float | None = None, max_triangles: int | None = None,
                     smooth_iterations: int = 10) -> Mesh:
    """Isosurface of a (Z, Y, X) stack (array or multi-page TIFF path).

    The stack is normalised to [0, 1] (0.5th-99.5th percentile), blurred
    (Gaussian, 1 voxel), thresholded at ``level`` (in [0, 1] of the
    normalised stack; default Otsu), zero-padded so the surface closes at the
    borders, and meshed with marching cubes (scikit-image) at the voxel
    ``spacing`` (z, y, x); over ``max_triangles`` the marching step is
    coarsened (when 4x or more over) and vertex clustering does the rest.
    Taubin smoothing (volume-preserving) follows, and each vertex is coloured
    (viridis) by the stack intensity one voxel inside the surface. Vertices are (x, y, z) in spacing units, centred.

    Raises:
        MissingDependencyError: scikit-image is not installed.
        InvalidImageError: not a 3D stack, or a constant one.
        ValueError: bad ``spacing`` / ``level`` / ``max_triangles``; nothing above ``level``.
    """
    budget = _budget(max_triangles)
    spacing = _check_spacing(spacing)
    stack = read_zstack(stack_or_path) if isinstance(stack_or_path, (str, Path)) else np.asarray(stack_or_path)
    if stack.ndim != 3 or min(stack.shape) < 2:
        raise InvalidImageError(f"a z-stack must be a (z, y, x) array with every side >= 2, got {stack.shape}.")
    try:
        from skimage.measure import marching_cubes  # noqa: PLC0415
    except ImportError as exc:
        raise MissingDependencyError("z-stack meshes need scikit-image: pip install scikit-image") from exc
    vol = normalise_stack(stack)
    smooth = gaussian_3d(vol, 1.0)
    if level is None:
        level = stain.otsu_threshold(smooth)
    elif not 0.0 < float(level) < 1.0:
        raise ValueError(f"level is a fraction of the normalised intensity, in (0, 1); got {level}.")
    level = float(level)
    if not (smooth.min() < level < smooth.max()):
        raise ValueError(f"no surface at level {level:.3g}: the normalised stack spans "
                         f"[{smooth.min():.3g}, {smooth.max():.3g}]; pick a level inside.")
    padded = np.pad(smooth, 1)
    verts, faces, _, _ = marching_cubes(padded, level, spacing=spacing, allow_degenerate=False)
    step = int(math.sqrt(len(faces) / budget))  # faces scale as 1 / step^2
    if step >= 2:  # far over budget: a coarser marching step is the cheapest decimation
        verts, faces, _, _ = marching_cubes(padded, level, spacing=spacing, step_size=step, allow_degenerate=False)
    verts = verts - np.asarray(spacing)  # undo the one-voxel pad
    xyz = verts[:, ::-1].astype(np.float32)  # (z, y, x) -> (x, y, z)
    mesh = Mesh(xyz, faces, np.zeros((len(xyz), 3), np.uint8))
    if mesh.volume() < 0:  # the axis swap mirrors the mesh: restore outward winding
        mesh = replace(mesh, faces=mesh.faces[:, ::-1])
    if mesh.n_faces > budget:
        mesh = decimate(mesh, budget)
    if smooth_iterations:
        mesh = taubin_smooth(mesh, iterations=smooth_iterations)
    colors = _intensity_colors(vol, mesh, spacing)
    centre = (mesh.vertices.min(axis=0) + mesh.vertices.max(axis=0)) / 2.0
    return Mesh(mesh.vertices - centre, mesh.faces, colors)


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
    if spacing is None:
        return (1.0, 1.0, 1.0)
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be three positive numbers (z, y, x), got {spacing!r}.")
    return values


def _budget(max_triangles: int | None) -> int:
    if max_triangles is None:
        return MAX_TRIANGLES
    if int(max_triangles) < 2:
        raise ValueError(f"max_triangles must be at least 2, got {max_triangles}.")
    return int(max_triangles)


# --------------------------------------------------------------------------- mesh operations


def decimate(mesh: Mesh, max_triangles: int, *, method: str = "cluster") -> Mesh:
    """Reduce ``mesh`` to at most ``max_triangles`` faces.

    ``"cluster"`` (numpy, default): vertex clustering; vertices in the same
    cubic cell are merged (mean position and colour) and collapsed faces
    dropped, the cell size growing by 15 % until the budget holds.
    ``"quadric"``: Open3D's quadric error decimation (better shape, needs open3d).
    """
    if mesh.n_faces <= max_triangles:
        return mesh
    if method == "quadric":
        return _decimate_open3d(mesh, max_triangles)
    if method != "cluster":
        raise ValueError(f"method must be 'cluster' or 'quadric', got {method!r}.")
    v = mesh.vertices.astype(np.float64)
    e = mesh.faces
    mean_edge = float(np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1).mean())
    cell = mean_edge * math.sqrt(mesh.n_faces / max_triangles)
    while True:
        out = _cluster(mesh, cell)
        if out.n_faces <= max_triangles:
            return out
        cell *= 1.15


def _cluster(mesh: Mesh, cell: float) -> Mesh:
    v = mesh.vertices.astype(np.float64)
    keys = np.floor((v - v.min(axis=0)) / cell).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    n = len(counts)
    new_v = np.stack([np.bincount(inverse, weights=v[:, k], minlength=n) for k in range(3)], 1) / counts[:, None]
    new_c = np.stack([np.bincount(inverse, weights=mesh.colors[:, k], minlength=n) for k in range(3)], 1) / counts[:, None]
    f = inverse[mesh.faces]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    _, first = np.unique(np.sort(f, axis=1), axis=0, return_index=True)
    f = f[np.sort(first)]
    return _compact(Mesh(new_v, f, np.rint(new_c)))


def _compact(mesh: Mesh) -> Mesh:
    """Drop vertices that no face uses."""
    used = np.unique(mesh.faces)
    remap = np.full(mesh.n_vertices, -1, np.int64)
    remap[used] = np.arange(len(used))
    return Mesh(mesh.vertices[used], remap[mesh.faces], mesh.colors[used])


def _decimate_open3d(mesh: Mesh, max_triangles: int) -> Mesh:
    try:
        import open3d as o3d  # noqa: PLC0415
    except (ImportError, OSError) as exc:  # OSError: a missing system library (libusb)
        raise MissingDependencyError(f"quadric decimation needs Open3D ({exc}); use method='cluster'.") from exc
    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices.astype(np.float64)),
                                  o3d.utility.Vector3iVector(mesh.faces.astype(np.int32)))
    m.vertex_colors = o3d.utility.Vector3dVector(mesh.colors.astype(np.float64) / 255.0)
    m = m.simplify_quadric_decimation(target_number_of_triangles=int(max_triangles))
    colors = np.rint(np.asarray(m.vertex_colors) * 255.0)
    return _compact(Mesh(np.asarray(m.vertices), np.asarray(m.triangles), colors))


def taubin_smooth(mesh: Mesh, *, iterations: int = 10, lam: float = 0.5, mu: float = -0.53) -> Mesh:
    """Taubin's lambda/mu smoothing: alternate shrink (lam) and inflate (mu) Laplacian steps.

    Each step moves a vertex by ``factor x (mean of neighbours - vertex)``;
    the pair acts as a low-pass filter that removes marching-cubes
    staircases without the shrinkage of plain Laplacian smoothing.
    """
    if iterations <= 0 or mesh.n_faces == 0:
        return mesh
    f = mesh.faces
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    edges = np.unique(np.concatenate([edges, edges[:, ::-1]]), axis=0)
    i, j = edges[:, 0], edges[:, 1]
    n = mesh.n_vertices
    degree = np.maximum(np.bincount(i, minlength=n), 1)[:, None]
    v = mesh.vertices.astype(np.float64)
    for _ in range(iterations):
        for factor in (lam, mu):
            mean = np.stack([np.bincount(i, weights=v[j, k], minlength=n) for k in range(3)], 1) / degree
            v = v + factor * (mean - v)
    return Mesh(v, mesh.faces, mesh.colors)


# --------------------------------------------------------------------------- files


def write_glb(mesh: Mesh, path: str | Path) -> Path:
    """glTF 2.0 binary with POSITION, NORMAL, COLOR_0 and indices (see :mod:`hematovision.glb`)."""
    return glb.write_glb(path, mesh.vertices, mesh.faces, mesh.colors, mesh.vertex_normals())


def write_ply(mesh: Mesh, path: str | Path) -> Path:
    """Binary little-endian PLY: x y z nx ny nz (float) red green blue (uchar); triangle faces."""
    path = Path(path)
    normals = mesh.vertex_normals()
    vdtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4"),
                       ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vert = np.empty(mesh.n_vertices, vdtype)
    for k, name in enumerate("xyz"):
        vert[name] = mesh.vertices[:, k]
        vert["n" + name] = normals[:, k]
    for k, name in enumerate(("red", "green", "blue")):
        vert[name] = mesh.colors[:, k]
    face = np.empty(mesh.n_faces, np.dtype([("n", "u1"), ("v", "<i4", (3,))]))
    face["n"] = 3
    face["v"] = mesh.faces
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by hematovision\n"
        f"element vertex {mesh.n_vertices}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property float nx\nproperty float ny\nproperty float nz\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {mesh.n_faces}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(vert.tobytes())
        fh.write(face.tobytes())
    return path


def write_obj(mesh: Mesh, path: str | Path) -> Path:
    """Wavefront OBJ with per-vertex colours (``v x y z r g b``, r g b in [0, 1]) and normals."""
    path = Path(path)
    normals = mesh.vertex_normals()
    v = np.hstack([mesh.vertices, mesh.colors / 255.0])
    f = mesh.faces + 1  # OBJ indices are 1-based
    lines = ["# written by hematovision"]
    lines += [f"v {a:.6g} {b:.6g} {c:.6g} {r:.4f} {g:.4f} {bl:.4f}" for a, b, c, r, g, bl in v.tolist()]
    lines += [f"vn {a:.5f} {b:.5f} {c:.5f}" for a, b, c in normals.tolist()]
    lines += [f"f {a}//{a} {b}//{b} {c}//{c}" for a, b, c in f.tolist()]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


WRITERS = {".glb": write_glb, ".ply": write_ply, ".obj": write_obj}


def write_mesh(mesh: Mesh, path: str | Path) -> Path:
    """Write by suffix: .glb, .ply or .obj."""
    path = Path(path)
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise ValueError(f"{path}: unknown mesh format {path.suffix!r}; use .glb, .ply or .obj.")
    return writer(mesh, path)
