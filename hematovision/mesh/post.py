"""Mesh post-processing: decimation to a triangle budget, Taubin smoothing, closedness and volume.

One interface, two engines: :class:`MeshOptions` in, :class:`MeshResult` out
(:func:`postprocess`), whichever engine ran.

- ``"numpy"`` (always there; the Raspberry Pi path): vertex-clustering decimation.
- ``"open3d"`` (server side): Open3D's quadric error decimation. Open3D is
  imported only inside the functions that use it, and only when a mesh is
  over its budget.
- ``"auto"`` (default): Open3D when it imports, else numpy.

Smoothing, normals, closedness and volume are numpy for both engines. That
split was measured (``python -m bench.mesh_open3d``, docs/mesh.md): quadric
decimation keeps the shape far better at a given triangle count (a 1000
triangle sphere: volume error -0.97 % against -3.6 % for clustering). Open3D's
``filter_smooth_taubin`` is about 8x faster, but its inverse-edge-length
weights fold marching-cubes meshes (552 self-intersecting triangles on the
test sphere after 10 iterations, 1942 on the real nucleus; the uniform numpy
filter: none). ``compute_vertex_normals`` gives the same normals (within
1e-7) and ``get_volume`` the same number as numpy, and ``is_watertight``
adds a self-intersection test that takes about a second per 15k triangles;
the tests and the bench use it as an independent check only.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import MissingDependencyError
from . import MAX_TRIANGLES, Mesh
from .cluster import cluster_decimate, compact

ENGINES = ("auto", "open3d", "numpy")
#: Taubin iterations of a z-stack isosurface (each one lambda step and one mu step).
SMOOTH_ITERATIONS = 10
#: Taubin's pair (Taubin 1995): lambda > 0 shrinks, mu < -lambda inflates back. The filter keeps
#: frequencies below the pass band k_PB = 1/lambda + 1/mu = 0.113 (in units of the Laplacian's
#: eigenvalues) and attenuates the voxel staircase above it, so the mesh does not shrink.
TAUBIN_LAMBDA = 0.5
TAUBIN_MU = -0.53
#: The quadric engine decimates from meshes of up to this many faces (builders coarsen above it);
#: it bounds the time (about 4 s from 185k to 50k faces on a busy 2-core machine).
QUADRIC_INPUT_FACES = 200_000
#: The smallest budget: a closed surface needs at least 4 triangles (a tetrahedron).
MIN_TRIANGLES = 4


def _check_int(name: str, value, minimum: int, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} ({example}); got {value!r}.")


def _check_engine(engine) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}.")


@dataclass(frozen=True, kw_only=True)
class MeshOptions:
    """How a mesh is post-processed.

    Attributes:
        decimate_to: triangle budget; a mesh over it is decimated to at most this many faces.
        smooth_iterations: Taubin smoothing iterations (0: none).
        engine: ``"auto"`` (Open3D when importable, else numpy), ``"open3d"`` or ``"numpy"``.
    """

    decimate_to: int = MAX_TRIANGLES
    smooth_iterations: int = SMOOTH_ITERATIONS
    engine: str = "auto"

    def __post_init__(self):
        _check_int("decimate_to", self.decimate_to, MIN_TRIANGLES, "a triangle budget such as 5000")
        _check_int("smooth_iterations", self.smooth_iterations, 0, "0 for no smoothing, 10 for a z-stack")
        _check_engine(self.engine)


@dataclass(frozen=True)
class MeshResult:
    """A post-processed mesh and what was done to it.

    ``engine`` is the engine that ran: ``"open3d"`` when Open3D decimated,
    else ``"numpy"`` (only decimation uses Open3D; never ``"auto"``);
    ``steps`` the operations applied, in order;
    ``watertight`` whether the surface is closed and consistently oriented
    (:func:`is_closed`); ``volume`` its enclosed volume when watertight, else
    None (an open 2.5D cell surface encloses nothing).
    """

    mesh: Mesh = field(repr=False)
    engine: str
    steps: tuple[str, ...]
    triangles_in: int
    watertight: bool
    volume: float | None
    surface_area: float
    seconds: float

    @property
    def triangles(self) -> int:
        return self.mesh.n_faces

    def summary(self) -> dict:
        """The JSON-ready facts (no arrays)."""
        return {"engine": self.engine, "steps": list(self.steps), "triangles_in": self.triangles_in,
                "triangles": self.triangles, "watertight": self.watertight, "volume": self.volume,
                "surface_area": self.surface_area, "seconds": round(self.seconds, 4)}


def postprocess(mesh: Mesh, *, options: MeshOptions = MeshOptions()) -> MeshResult:
    """Decimate ``mesh`` to ``options.decimate_to`` faces, Taubin-smooth it, check closedness and volume.

    With ``engine="auto"`` Open3D is imported only when the mesh is over
    budget (only decimation uses it). ``engine="open3d"`` needs a working
    Open3D whatever the mesh, so a missing one shows at once.

    Raises:
        MissingDependencyError: ``engine="open3d"`` without a working Open3D.
        ValueError: ``mesh`` has no triangles, or none are left at the budget (never an empty result).
    """
    t0 = time.perf_counter()
    decimating = mesh.n_faces > options.decimate_to
    smoothing = options.smooth_iterations > 0 and mesh.n_faces > 0
    engine = resolve_engine(options.engine) if decimating or options.engine == "open3d" else "numpy"
    out, steps = mesh, []
    if decimating:
        method = "quadric" if engine == "open3d" else "cluster"
        out = decimate(out, options.decimate_to, method=method)
        steps.append(f"decimate:{method}")
    if smoothing:
        out = taubin_smooth(out, iterations=options.smooth_iterations)
        steps.append("taubin")
    _check_not_empty(mesh, out, options.decimate_to)
    closed = is_closed(out)
    ran = "open3d" if decimating and engine == "open3d" else "numpy"
    return MeshResult(mesh=out, engine=ran, steps=tuple(steps), triangles_in=mesh.n_faces, watertight=closed,
                      volume=out.volume() if closed else None, surface_area=out.surface_area(),
                      seconds=time.perf_counter() - t0)


def _check_not_empty(mesh: Mesh, out: Mesh, budget: int) -> None:
    """An empty mesh is no answer: say why there is none (no surface, or the budget is too small for it)."""
    if mesh.n_faces == 0:
        raise ValueError("there is no surface to mesh (0 triangles); check the input (and the iso level).")
    if out.n_faces == 0:
        raise ValueError(f"no triangles are left when decimating {mesh.n_faces} to a budget of {budget}; "
                         "raise the triangle budget (--max-triangles) or use the open3d engine.")


def resolve_engine(engine: str = "auto") -> str:
    """``"open3d"`` or ``"numpy"``: the engine ``engine`` means on this machine (imports Open3D to know)."""
    _check_engine(engine)
    if engine == "numpy":
        return "numpy"
    if engine == "open3d":
        _require_open3d("engine='open3d'")
        return "open3d"
    return "open3d" if _import_open3d() is not None else "numpy"


def open3d_installed() -> bool:
    """Whether Open3D is installed, without importing it (an import costs 1-2 s and about 200 MiB of memory)."""
    try:
        return importlib.util.find_spec("open3d") is not None
    except (ImportError, ValueError):  # ValueError: a half-imported module without a spec
        return False


def decimation_input_faces(engine: str, decimate_to: int) -> int:
    """How many faces a mesh builder may hand to :func:`postprocess` before coarsening its own sampling.

    Vertex clustering loses shape fast as the reduction grows, so for numpy
    the builders sample at the budget itself (a coarser grid or marching step
    is the cheapest decimation); quadric decimation keeps the shape, so for
    Open3D they sample finely, up to :data:`QUADRIC_INPUT_FACES`. For
    ``"auto"`` this asks whether Open3D is installed without importing it, so
    the import (in :func:`postprocess`) comes after the builder's own peak of
    memory; should the import then fail, numpy clusters the finer mesh.
    """
    _check_engine(engine)
    quadric = engine == "open3d" or (engine == "auto" and open3d_installed())
    return max(int(decimate_to), QUADRIC_INPUT_FACES) if quadric else int(decimate_to)


def is_closed(mesh: Mesh) -> bool:
    """Watertight in the edge sense: closed, edge-manifold and consistently oriented.

    Every directed edge a -> b of the faces occurs exactly once and so does
    its twin b -> a, i.e. each edge joins exactly two faces that traverse it
    in opposite directions. Then the divergence-theorem volume
    (:meth:`Mesh.volume`) is the enclosed volume. Self-intersections are not
    tested (Open3D's ``is_watertight`` does, in seconds).
    """
    f = mesh.faces.astype(np.int64)
    if not len(f) or np.any((f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])):
        return False
    a = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    b = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    n = np.int64(mesh.n_vertices)
    keys, counts = np.unique(a * n + b, return_counts=True)
    return bool((counts == 1).all() and np.isin(b * n + a, keys).all())


# --------------------------------------------------------------------------- decimation


def decimate(mesh: Mesh, max_triangles: int, *, method: str = "cluster") -> Mesh:
    """Reduce ``mesh`` to at most ``max_triangles`` faces.

    ``"cluster"`` (numpy): vertex clustering; vertices in the same cubic cell
    are merged (mean position and colour) and collapsed faces dropped, the
    cell size growing by 15 % until the budget holds (:mod:`hematovision.mesh.cluster`).
    ``"quadric"`` (Open3D): quadric error decimation (see :func:`_decimate_quadric`).
    """
    if method not in ("cluster", "quadric"):
        raise ValueError(f"method must be 'cluster' or 'quadric', got {method!r}.")
    if mesh.n_faces <= max_triangles:
        return mesh
    if method == "quadric":
        return _decimate_quadric(mesh, max_triangles)
    return cluster_decimate(mesh, max_triangles)


def _decimate_quadric(mesh: Mesh, max_triangles: int) -> Mesh:
    """Garland-Heckbert quadric error decimation (Open3D).

    Each face plane p = (n, d), with n.x + d = 0 and |n| = 1, gives the
    quadric K_p = p p^T (4x4), so that [x 1] K_p [x 1]^T is the squared
    distance of x to the plane. A vertex carries Q = the sum of its faces'
    K_p, each weighted by the face's area. Collapsing an edge (a, b) to x
    costs [x 1] (Q_a + Q_b) [x 1]^T, the summed squared distance to the
    original planes, minimised over x by a 3x3 solve (the best of a, b and
    their midpoint when that system is singular); the cheapest collapse goes
    first, one that would flip a face is skipped, until ``max_triangles``
    remain. A border edge adds the quadric of the plane through it
    perpendicular to its face (weight 1 x area), so an open cell surface
    keeps its outline. A collapsed pair takes the mean of the two colours.
    """
    o3d = _require_open3d("quadric decimation")
    out = _to_open3d(o3d, mesh).simplify_quadric_decimation(target_number_of_triangles=int(max_triangles))
    return _from_open3d(out)


# --------------------------------------------------------------------------- smoothing


def taubin_smooth(mesh: Mesh, *, iterations: int = SMOOTH_ITERATIONS) -> Mesh:
    """Taubin's lambda/mu smoothing (numpy): alternate shrink and inflate Laplacian steps.

    Each step moves every vertex by ``factor x (mean of its neighbours -
    vertex)``, neighbours weighed equally, first with ``factor`` =
    :data:`TAUBIN_LAMBDA`, then :data:`TAUBIN_MU`; the pair is a low-pass
    filter that removes marching-cubes staircases without the shrinkage of
    plain Laplacian smoothing. (Open3D's filter weighs neighbours by inverse
    edge length; on marching-cubes meshes, with edges down to 1e-4 voxel, that
    folds the surface: see the module docstring.)
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
        for factor in (TAUBIN_LAMBDA, TAUBIN_MU):
            mean = np.stack([np.bincount(i, weights=v[j, k], minlength=n) for k in range(3)], 1) / degree
            v = v + factor * (mean - v)
    return Mesh(v, mesh.faces, mesh.colors)


# --------------------------------------------------------------------------- Open3D plumbing


def _import_open3d():
    """The open3d module, or None when it is not installed or cannot load (a missing libusb is an OSError)."""
    try:
        import open3d  # noqa: PLC0415
    except (ImportError, OSError):
        return None
    return open3d


def _require_open3d(what: str):
    o3d = _import_open3d()
    if o3d is None:
        raise MissingDependencyError(
            f"{what} needs Open3D: pip install open3d (on Debian also apt-get install libusb-1.0-0); "
            "or use engine='numpy' (or 'auto', which falls back to numpy).")
    return o3d


def _to_open3d(o3d, mesh: Mesh):
    out = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices.astype(np.float64)),
                                    o3d.utility.Vector3iVector(mesh.faces))
    out.vertex_colors = o3d.utility.Vector3dVector(mesh.colors.astype(np.float64) / 255.0)
    return out


def _from_open3d(o3d_mesh) -> Mesh:
    colors = np.rint(np.clip(np.asarray(o3d_mesh.vertex_colors), 0.0, 1.0) * 255.0)
    return compact(Mesh(np.asarray(o3d_mesh.vertices), np.asarray(o3d_mesh.triangles), colors))
