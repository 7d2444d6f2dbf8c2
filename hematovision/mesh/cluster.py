"""Vertex-clustering decimation (numpy): the ``"cluster"`` method of :func:`hematovision.mesh.post.decimate`.

Vertices in the same cubic cell are merged (mean position and colour) and
collapsed faces dropped, the cell size growing by 15 % until the budget
holds. Where one growth step merges every face away (a tiny budget), the cell
size is bisected for the coarsest one that keeps a face: never an empty mesh
while one within the budget exists.
"""

from __future__ import annotations

import math

import numpy as np

from . import Mesh


def cluster_decimate(mesh: Mesh, max_triangles: int) -> Mesh:
    """``mesh`` clustered to at most ``max_triangles`` faces (at least one where any clustering keeps one)."""
    if mesh.n_faces <= max_triangles:
        return mesh
    v = mesh.vertices.astype(np.float64)
    e = mesh.faces
    mean_edge = float(np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1).mean())
    cell = mean_edge * math.sqrt(mesh.n_faces / max_triangles)
    finer = cell * 1e-6  # a cell size known to keep too many faces (about none merged)
    while True:
        out = cluster(mesh, cell)
        if out.n_faces <= max_triangles:
            return out if out.n_faces else _bisect_cell(mesh, max_triangles, finer, cell)
        finer, cell = cell, cell * 1.15


def _bisect_cell(mesh: Mesh, max_triangles: int, finer: float, coarser: float) -> Mesh:
    """Clustering at ``coarser`` merges every face away: the coarsest cell between that keeps some face within
    the budget (an empty mesh when none does, after 30 halvings)."""
    best = cluster(mesh, coarser)
    for _ in range(30):
        mid = (finer + coarser) / 2.0
        out = cluster(mesh, mid)
        if out.n_faces > max_triangles:
            finer = mid
        elif out.n_faces == 0:
            coarser = mid
        else:
            return out
    return best


def cluster(mesh: Mesh, cell: float) -> Mesh:
    """``mesh`` with the vertices in each ``cell``-sized cube merged and the collapsed or repeated faces dropped."""
    v = mesh.vertices.astype(np.float64)
    keys = np.floor((v - v.min(axis=0)) / cell).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    n = len(counts)
    new_v = np.stack([np.bincount(inverse, weights=v[:, k], minlength=n) for k in range(3)], 1) / counts[:, None]
    new_c = np.stack([np.bincount(inverse, weights=mesh.colors[:, k], minlength=n) for k in range(3)], 1)
    new_c /= counts[:, None]
    f = inverse[mesh.faces]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    _, first = np.unique(np.sort(f, axis=1), axis=0, return_index=True)
    f = f[np.sort(first)]
    return compact(Mesh(new_v, f, np.rint(new_c)))


def compact(mesh: Mesh) -> Mesh:
    """Drop vertices that no face uses."""
    used = np.unique(mesh.faces)
    remap = np.full(mesh.n_vertices, -1, np.int64)
    remap[used] = np.arange(len(used))
    return Mesh(mesh.vertices[used], remap[mesh.faces], mesh.colors[used])
