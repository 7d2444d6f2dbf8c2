"""3D views of cells: the mesh type and its file writers; the builders and operations are reachable from here.

Numpy at import time, nothing heavier. The builders live in their own
modules and their public names are also reachable from here (loaded on first
use: no import cycle), e.g. ``from hematovision.mesh import mesh_from_zstack``:
the 2.5D surface of a stained image in :mod:`hematovision.mesh.surface`, the
z-stack isosurface in :mod:`hematovision.mesh.isosurface`, z-stack reading in
:mod:`hematovision.mesh.zstack`, and decimation / smoothing / checks (numpy, or
Open3D on a server) in :mod:`hematovision.mesh.post`.

Public API::

    Mesh(vertices (N, 3) float32, faces (M, 3) int32, colors (N, 3) uint8 sRGB)
    mesh_from_image(image, *, color="image", cam=None, options=IMAGE_OPTIONS, segmentation=None) -> Mesh   (surface)
    image_surface(...same) -> MeshResult   (surface: the mesh, the engine that ran, closedness, volume)
    mesh_from_zstack(stack_or_path, *, spacing=(1, 1, 1), level=None, options=ZSTACK_OPTIONS) -> Mesh   (isosurface)
    zstack_surface(...same) -> MeshResult   (isosurface)
    read_zstack(path) -> (Z, Y, X) float32;  load_zstack(path) -> ZStack;  is_zstack(path) -> bool   (zstack)
    MeshOptions(*, decimate_to=50000, smooth_iterations=10, engine="auto");  postprocess(mesh, *, options) -> MeshResult
    decimate(mesh, max_triangles, *, method="cluster"|"quadric");  taubin_smooth(mesh, *, iterations=10);  is_closed(mesh)
    write_glb(mesh, path), write_ply(mesh, path), write_obj(mesh, path), write_mesh(mesh, path)

Image meshes are in units of the cell's bounding-box side (the mesh spans
about 1 x 1), x right, y up, z towards the viewer (glTF is y-up). Z-stack
meshes are in the units of ``spacing`` (um for a microscope stack; source
voxels when no spacing is given), centred on the object.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import glb

#: Triangle budget of every mesh (keeps a .glb under ~2 MB and a browser smooth).
MAX_TRIANGLES = 50_000
#: Public names of the builder and operation modules, importable from here (loaded on first use: no import cycle).
_LAZY_NAMES = {
    **dict.fromkeys(("mesh_from_image", "image_surface", "cam_colors", "IMAGE_OPTIONS", "HEIGHT_RATIO", "DOME_SHARE"),
                    "surface"),
    **dict.fromkeys(("mesh_from_zstack", "zstack_surface", "normalise_stack", "gaussian_3d", "ZSTACK_OPTIONS"),
                    "isosurface"),
    **dict.fromkeys(("is_zstack", "read_zstack", "load_zstack", "inspect_zstack", "ZStack"), "zstack"),
    **dict.fromkeys(("MeshOptions", "MeshResult", "postprocess", "decimate", "taubin_smooth", "is_closed",
                     "resolve_engine"), "post"),
}


def __getattr__(name: str):
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


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


# --------------------------------------------------------------------------- files


def write_glb(mesh: Mesh, path: str | Path) -> Path:
    """glTF 2.0 binary with POSITION, NORMAL, COLOR_0 and indices (see :mod:`hematovision.mesh.glb`)."""
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
    """Write by suffix: .glb, .ply or .obj; atomically (an existing file is replaced only by a complete one)."""
    path = Path(path)
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise ValueError(f"{path}: unknown mesh format {path.suffix!r}; use .glb, .ply or .obj.")
    if mesh.n_faces == 0:  # an empty file would look like a result
        raise ValueError(f"{path}: the mesh has no triangles, so nothing was written; check the input "
                         "(a larger triangle budget may keep a surface).")
    # Written under the same name in a hidden folder beside the target (the .glb keeps the file's stem as its mesh
    # name), then renamed over it in one step: a write that fails half-way (a full disk, an interrupt) leaves an
    # earlier file of that name as it was, never a truncated mesh.
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        writer(mesh, staging / path.name)
        os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
