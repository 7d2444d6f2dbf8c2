"""Open3D against numpy for mesh post-processing: triangles, .glb size, area / volume error, time.

    python -m bench.mesh_open3d [--data DIR] [--runs 5] [--json bench/results/mesh_open3d.json]

Each case is meshed by both engines of :mod:`hematovision.mesh.post` at
several triangle budgets (``MeshOptions(decimate_to=...)``; the engine
chosen explicitly, the smoothing that of the product):

- ``sphere``: the isosurface of a voxelised ball of radius 20 voxels (a 56^3
  stack, level 0.5); errors against the analytic 4 pi r^2 and 4/3 pi r^3.
- ``nucleus``: ``zstack/nucleus.tif`` under ``--data`` (default:
  $HEMATOVISION_DATA, else ../shared/data), spacing 0.29 0.26 0.26 um; errors
  against the same engine's full-resolution mesh (no decimation). Skipped,
  with the reason, when the file is absent.
- ``cell``: the 2.5D surface of a PBC test image (a synthetic cell without
  the data); area and volume-under-the-surface errors against the
  full-resolution pixel grid.

Then ``steps``: each Open3D operation alone against its numpy counterpart on
the sphere's raw marching-cubes mesh (decimation, Taubin smoothing, vertex
normals, volume, watertightness), and Open3D's Taubin filter on the nucleus. Times are medians of ``--runs`` calls after
one warm-up (so the Open3D import, timed separately in a fresh process, is
not in them); ``o3d watertight`` is Open3D's ``is_watertight`` (with its
self-intersection test) as an independent check of the numpy one.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.common import ROOT, default_data_dir, idleness, machine, split_images, time_calls
from hematovision.commands import write_json
from hematovision.mesh import isosurface
from hematovision import mesh as meshes
from hematovision.mesh import surface
from hematovision.mesh.post import MeshOptions, is_closed

SPHERE_RADIUS = 20.0
SPHERE_SHAPE = (56, 56, 56)
NUCLEUS_SPACING = (0.29, 0.26, 0.26)  # um, as published for cells3d
BUDGETS = {"sphere": (50_000, 5_000, 1_000, 300), "nucleus": (50_000, 5_000, 1_000), "cell": (50_000, 2_000, 500)}
ENGINES = ("numpy", "open3d")
#: Open3D's is_watertight costs seconds per 10k triangles (its self-intersection test): only checked below this.
O3D_CHECK_MAX_FACES = 25_000
OUT = ROOT / "bench" / "results" / "mesh_open3d.json"


@dataclass(frozen=True)
class Row:
    case: str
    requested: str  # MeshOptions.engine
    engine: str  # MeshResult.engine: the engine that ran (numpy when nothing needed decimating)
    budget: int
    steps: tuple[str, ...]
    triangles: int
    glb_bytes: int
    area_error_pct: float
    volume_error_pct: float
    watertight: bool  # hematovision.mesh.post.is_closed
    o3d_watertight: bool | None  # Open3D's is_watertight (None: open surface, or too big to check)
    total_ms: float  # the whole call (marching / grid + post-processing + colours)
    post_ms: float  # post-processing alone (MeshResult.seconds)


@dataclass(frozen=True)
class Step:
    step: str
    numpy_ms: float
    open3d_ms: float
    numpy: str  # what numpy gave
    open3d: str  # what Open3D gave
    verdict: str


def ball_stack(radius: float, shape: tuple[int, int, int]) -> np.ndarray:
    """uint16 (z, y, x): 4100 inside a ball of ``radius`` voxels about the centre, 100 outside."""
    axes = [np.arange(n) - (n - 1) / 2 for n in shape]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return ((z * z + y * y + x * x) <= radius * radius).astype(np.uint16) * 4000 + 100


def height_volume(mesh) -> float:
    """Volume under a 2.5D surface: sum of each face's xy-projected (signed) area x its mean height."""
    v = mesh.vertices.astype(np.float64)
    a, b, c = (v[mesh.faces[:, k]] for k in range(3))
    projected = 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
    return float((projected * (a[:, 2] + b[:, 2] + c[:, 2]) / 3.0).sum())


def to_open3d(mesh):
    import open3d as o3d

    return o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices.astype(np.float64)),
                                     o3d.utility.Vector3iVector(mesh.faces))


def open3d_taubin(mesh):
    """Open3D's Taubin filter (inverse-edge-length weights), same lambda / mu / iterations as numpy's."""
    import open3d as o3d

    from hematovision.mesh.post import SMOOTH_ITERATIONS, TAUBIN_LAMBDA, TAUBIN_MU

    out = to_open3d(mesh).filter_smooth_taubin(number_of_iterations=SMOOTH_ITERATIONS, lambda_filter=TAUBIN_LAMBDA,
                                               mu=TAUBIN_MU, filter_scope=o3d.geometry.FilterScope.Vertex)
    return meshes.Mesh(np.asarray(out.vertices), mesh.faces, mesh.colors)


def self_intersections(mesh) -> int:
    """Triangles that Open3D finds intersecting another (0 for a clean surface)."""
    return len(np.asarray(to_open3d(mesh).get_self_intersecting_triangles()))


def pct(value: float, reference: float) -> float:
    return round(100.0 * (value / reference - 1.0), 3)


def measure(case: str, build, reference, volume_of, runs: int, tmp: Path) -> list[Row]:
    """``build(options) -> MeshResult`` for each engine and budget of ``case``; errors against ``reference(engine)``."""
    rows = []
    smooth = (surface.IMAGE_OPTIONS if case == "cell" else isosurface.ZSTACK_OPTIONS).smooth_iterations  # the product's
    for engine in ENGINES:
        area_ref, volume_ref = reference(engine)
        for budget in BUDGETS[case]:
            options = MeshOptions(decimate_to=budget, smooth_iterations=smooth, engine=engine)
            result = build(options)  # the warm-up
            timed = []
            for _ in range(runs):
                t0 = time.perf_counter()
                result = build(options)
                timed.append((time.perf_counter() - t0, result.seconds))
            ms, post_s = np.median(np.array(timed), axis=0)
            mesh = result.mesh
            glb = meshes.write_glb(mesh, tmp / f"{case}-{engine}-{budget}.glb").stat().st_size
            check = None
            if case != "cell" and mesh.n_faces <= O3D_CHECK_MAX_FACES:
                check = bool(to_open3d(mesh).is_watertight())
            rows.append(Row(case=case, requested=engine, engine=result.engine, budget=budget, steps=result.steps,
                            triangles=mesh.n_faces, glb_bytes=glb, area_error_pct=pct(mesh.surface_area(), area_ref),
                            volume_error_pct=pct(volume_of(mesh), volume_ref), watertight=result.watertight,
                            o3d_watertight=check, total_ms=round(float(ms) * 1000, 1), post_ms=round(float(post_s) * 1000, 1)))
    return rows


def sphere_rows(runs: int, tmp: Path) -> list[Row]:
    stack = ball_stack(SPHERE_RADIUS, SPHERE_SHAPE)
    analytic = (4.0 * math.pi * SPHERE_RADIUS ** 2, 4.0 / 3.0 * math.pi * SPHERE_RADIUS ** 3)
    return measure("sphere", lambda o: isosurface.zstack_surface(stack, level=0.5, options=o), lambda e: analytic,
                   lambda m: m.volume(), runs, tmp)


def nucleus_rows(path: Path, runs: int, tmp: Path) -> list[Row]:
    def build(options):
        return isosurface.zstack_surface(path, spacing=NUCLEUS_SPACING, options=options)

    def full(engine):  # the engine's own full-resolution mesh (the stack is under the default budget)
        mesh = build(MeshOptions(decimate_to=10 ** 7, engine=engine)).mesh
        return mesh.surface_area(), mesh.volume()

    return measure("nucleus", build, full, lambda m: m.volume(), runs, tmp)


def cell_rows(image, runs: int, tmp: Path) -> list[Row]:
    full = surface.image_surface(image, options=MeshOptions(decimate_to=10 ** 7, smooth_iterations=0,
                                                            engine="numpy")).mesh
    reference = (full.surface_area(), height_volume(full))
    return measure("cell", lambda o: surface.image_surface(image, options=o), lambda e: reference,
                   height_volume, runs, tmp)


# --------------------------------------------------------------------------- each Open3D step against numpy


def median_ms(fn, runs: int) -> float:
    return round(float(np.median(time_calls(lambda i: fn(), runs=runs, warmup=1))) * 1000.0, 2)


def step_rows(runs: int, nucleus: Path | None) -> list[Step]:
    from hematovision.mesh.post import decimate

    raw = isosurface.zstack_surface(ball_stack(SPHERE_RADIUS, SPHERE_SHAPE), level=0.5,
                                    options=MeshOptions(decimate_to=10 ** 7, smooth_iterations=0, engine="numpy")).mesh
    area, volume = 4.0 * math.pi * SPHERE_RADIUS ** 2, 4.0 / 3.0 * math.pi * SPHERE_RADIUS ** 3

    def errors(m) -> str:
        return f"{m.n_faces} tri, area {pct(m.surface_area(), area):+.2f} %, volume {pct(m.volume(), volume):+.2f} %"

    steps = []
    for target in (5_000, 1_000):
        c, q = decimate(raw, target, method="cluster"), decimate(raw, target, method="quadric")
        steps.append(Step(f"decimate {raw.n_faces} -> {target}", median_ms(lambda: decimate(raw, target), runs),
                          median_ms(lambda: decimate(raw, target, method="quadric"), runs), errors(c), errors(q),
                          "open3d: quadric keeps the shape"))
    steps.append(taubin_row("Taubin x10, sphere", raw, runs, errors))
    if nucleus is not None:
        real = isosurface.zstack_surface(nucleus, spacing=NUCLEUS_SPACING, options=MeshOptions(
            decimate_to=10 ** 7, smooth_iterations=0, engine="numpy")).mesh
        steps.append(taubin_row("Taubin x10, nucleus", real, runs, lambda m: f"{m.n_faces} tri"))
    return steps + check_rows(raw, runs)


def taubin_row(name: str, raw, runs: int, describe) -> Step:
    from hematovision.mesh.post import taubin_smooth

    n, o = taubin_smooth(raw), open3d_taubin(raw)
    folds_n, folds_o = self_intersections(n), self_intersections(o)
    return Step(name, median_ms(lambda: taubin_smooth(raw), runs), median_ms(lambda: open3d_taubin(raw), runs),
                f"{describe(n)}; {folds_n} self-intersecting", f"{describe(o)}; {folds_o} self-intersecting",
                "numpy: Open3D is faster but folds the surface" if folds_o > folds_n else "either")


def check_rows(raw, runs: int) -> list[Step]:
    def o3d_normals():
        m = to_open3d(raw)
        m.compute_vertex_normals()
        return np.asarray(m.vertex_normals)

    gap = float(np.abs(raw.vertex_normals() - o3d_normals()).max())
    o3d_volume = to_open3d(raw).get_volume()
    agree = bool(to_open3d(raw).is_watertight()) == is_closed(raw)
    slow = max(1, runs // 3)  # is_watertight / get_volume take seconds
    return [
        Step("vertex normals", median_ms(raw.vertex_normals, runs), median_ms(o3d_normals, runs),
             "area-weighted", f"max difference {gap:.1e}", "numpy: the same normals; a millisecond is not worth a second path"),
        Step("volume", median_ms(raw.volume, runs), median_ms(lambda: to_open3d(raw).get_volume(), slow),
             f"{raw.volume():.3f}", f"{o3d_volume:.3f}", "numpy: same number; get_volume runs is_watertight first"),
        Step("watertight", median_ms(lambda: is_closed(raw), runs),
             median_ms(lambda: to_open3d(raw).is_watertight(), slow), f"{is_closed(raw)} (edges)",
             f"{'agrees' if agree else 'DISAGREES'} (+ self-intersections)",
             "numpy in the product; Open3D's check in the tests and here"),
    ]


# --------------------------------------------------------------------------- report


def open3d_import() -> dict:
    """Seconds and resident memory (MiB) that ``import open3d`` costs a fresh process (numpy already loaded)."""
    code = ("import time, numpy\n"
            "rss = lambda: next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:'))\n"
            "m, t = rss(), time.perf_counter()\nimport open3d\nprint(time.perf_counter() - t, (rss() - m) / 1024)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return {"seconds": None, "rss_mib": None}
    seconds, mib = (float(x) for x in r.stdout.split())
    return {"seconds": round(seconds, 2), "rss_mib": round(mib)}


def run(data: Path, runs: int) -> dict:
    out = {"command": "python -m bench.mesh_open3d", "machine": asdict(machine()), "runs": runs,
           "open3d_import": open3d_import(), "cases": {}, "skipped": {}}
    images = split_images(data, "pbc", 1)
    if images:
        image, out["cell_image"] = images[0], str(images[0].relative_to(data))
    else:
        from tests._data import synthetic_cell

        image, out["cell_image"] = synthetic_cell()[0], "synthetic 160 px cell (no PBC data)"
    nucleus = data / "zstack" / "nucleus.tif"
    with tempfile.TemporaryDirectory() as tmp:
        out["cases"]["sphere"] = [asdict(r) for r in sphere_rows(runs, Path(tmp))]
        if nucleus.is_file():
            out["cases"]["nucleus"] = [asdict(r) for r in nucleus_rows(nucleus, runs, Path(tmp))]
        else:
            out["skipped"]["nucleus"] = f"{nucleus} not found (set --data or HEMATOVISION_DATA)"
        out["cases"]["cell"] = [asdict(r) for r in cell_rows(image, runs, Path(tmp))]
    out["steps"] = [asdict(s) for s in step_rows(runs, nucleus if nucleus.is_file() else None)]
    out["idle"] = asdict(idleness(0.5))
    return out


def markdown(result: dict) -> str:
    lines = ["| case | engine (ran) | budget | steps | triangles | .glb KiB | area err % | volume err % | watertight "
             "(numpy / o3d) | total ms | post ms |", "|" + "---|" * 11]
    for case, rows in result["cases"].items():
        for r in rows:
            o3d = "-" if r["o3d_watertight"] is None else ("yes" if r["o3d_watertight"] else "no")
            ran = r["engine"] if r["engine"] == r["requested"] else f"{r['requested']} ({r['engine']})"
            lines.append(f"| {case} | {ran} | {r['budget']} | {', '.join(r['steps']) or '-'} | "
                         f"{r['triangles']} | {r['glb_bytes'] / 1024:.0f} | {r['area_error_pct']:+.2f} | "
                         f"{r['volume_error_pct']:+.2f} | {'yes' if r['watertight'] else 'no'} / {o3d} | "
                         f"{r['total_ms']:.0f} | {r['post_ms']:.0f} |")
    lines += ["", "| step (sphere raw mesh) | numpy ms | open3d ms | numpy | open3d | kept |", "|" + "---|" * 6]
    lines += [f"| {s['step']} | {s['numpy_ms']} | {s['open3d_ms']} | {s['numpy']} | {s['open3d']} | {s['verdict']} |"
              for s in result["steps"]]
    for case, why in result["skipped"].items():
        lines.append(f"\n{case}: skipped, {why}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.mesh_open3d", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="shared data folder (zstack/, pbc/)")
    p.add_argument("--runs", type=int, default=5, help="timed calls per measurement (default: %(default)s)")
    p.add_argument("--json", type=Path, default=OUT, help="results file (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        import open3d  # noqa: F401
    except (ImportError, OSError) as exc:
        print(f"error: this benchmark compares against Open3D, which does not import here ({exc})", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    result = run(args.data or default_data_dir(), args.runs)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(args.json, result, indent=1)
    print(markdown(result))
    idle = result["idle"]
    print(f"\nmachine: {result['machine']['cpu']} x{result['machine']['logical_cpus']}, idle={idle['idle']} "
          f"load={idle['load_average']}; import open3d: {result['open3d_import']['seconds']} s, "
          f"{result['open3d_import']['rss_mib']} MiB; wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
