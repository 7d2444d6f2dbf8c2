"""Mesh post-processing (hematovision.mesh.post): the Open3D quadric path, the numpy fallback, the options.

Golden values come from ``python -m bench.mesh_open3d`` (docs/mesh.md): the
isosurface of a voxelised ball of radius 20 voxels, decimated to 1000
triangles, has a volume error of -0.2 % with Open3D's quadric decimation and
-2.1 % with numpy clustering; the tolerances below leave room for both.
"""

from __future__ import annotations

import builtins
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hematovision.mesh import isosurface
from hematovision.mesh import post as mesh_post
from hematovision.mesh import surface
from hematovision.__main__ import main
from hematovision.errors import MissingDependencyError
from hematovision.mesh import Mesh
from hematovision.mesh.post import MeshOptions, MeshResult, decimate, is_closed, postprocess
from tests._data import synthetic_cell
from tests.conftest import ROOT
from tests.test_mesh import ball_stack

RADIUS = 20.0
SHAPE = (56, 56, 56)
AREA, VOLUME = 4 * math.pi * RADIUS ** 2, 4 / 3 * math.pi * RADIUS ** 3
#: Open3D's result at 1000 triangles: area and volume within 1 % of 4 pi r^2 and 4/3 pi r^3 (measured: +0.2 %, -0.2 %).
OPEN3D_TOLERANCE = 0.01


def fresh_python_words(code: str, *, timeout: float = 120) -> list[str]:
    """Run ``code`` in a fresh interpreter at the repository root (nothing imported yet); its stdout, split into words.

    Fails the test, with the child's stderr, unless it exits 0. For checks of
    what an import pulls in, which this process (already full of modules) cannot answer.
    """
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


@pytest.fixture(scope="module")
def o3d():
    try:
        import open3d
    except (ImportError, OSError) as exc:  # OSError: Open3D installed without Debian's libusb-1.0-0
        pytest.skip(f"Open3D does not import here ({exc}): pip install open3d, apt-get install libusb-1.0-0")
    return open3d


@pytest.fixture(scope="module")
def stack():
    return ball_stack(RADIUS, shape=SHAPE)


def as_open3d(o3d, mesh: Mesh):
    return o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices.astype(np.float64)),
                                     o3d.utility.Vector3iVector(mesh.faces))


def tetrahedron() -> Mesh:
    """The unit right tetrahedron, faces outward: volume 1/6, area 3/2 + sqrt(3)/2 (hand-derived)."""
    v = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    return Mesh(v, [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.zeros((4, 3)))


# --------------------------------------------------------------------------- the Open3D path


def test_open3d_quadric_path_is_called_and_gives_a_watertight_analytic_sphere(o3d, stack, monkeypatch):
    calls = []
    real = mesh_post._decimate_quadric
    monkeypatch.setattr(mesh_post, "_decimate_quadric", lambda m, n: calls.append((m.n_faces, n)) or real(m, n))
    result = isosurface.zstack_surface(stack, level=0.5, options=MeshOptions(decimate_to=1000, engine="open3d"))
    assert calls and calls[0][1] == 1000  # Open3D did the decimation, from the full-resolution mesh
    assert result.engine == "open3d" and result.steps == ("decimate:quadric", "taubin")
    assert result.triangles == 1000 < result.triangles_in  # quadric hits the target exactly
    assert result.watertight and as_open3d(o3d, result.mesh).is_watertight()  # Open3D's own check agrees
    assert result.volume == pytest.approx(VOLUME, rel=OPEN3D_TOLERANCE)
    assert result.surface_area == pytest.approx(AREA, rel=OPEN3D_TOLERANCE)
    # The same number as Open3D's get_volume (float32 vertices: equal to 1e-6).
    assert result.volume == pytest.approx(as_open3d(o3d, result.mesh).get_volume(), rel=1e-6)


def test_quadric_beats_clustering_at_the_same_budget(o3d, stack):
    errors = {}
    for engine in ("open3d", "numpy"):
        result = isosurface.zstack_surface(stack, level=0.5, options=MeshOptions(decimate_to=1000, engine=engine))
        assert result.triangles <= 1000 and result.watertight
        errors[engine] = abs(result.volume / VOLUME - 1)
    assert errors["open3d"] < 0.5 * errors["numpy"], errors  # measured: 0.2 % against 2.1 %


def test_quadric_decimation_of_a_raw_mesh(o3d, stack):
    raw = isosurface.zstack_surface(stack, level=0.5, options=MeshOptions(decimate_to=10 ** 6, smooth_iterations=0,
                                                                          engine="numpy")).mesh
    small = decimate(raw, 2000, method="quadric")
    assert small.n_faces == 2000 < raw.n_faces
    assert is_closed(small) and len(small.colors) == small.n_vertices == np.unique(small.faces).size
    assert small.volume() == pytest.approx(raw.volume(), rel=0.01)


def test_cell_surface_is_quadric_decimated_keeping_its_shape(o3d):
    rgb = synthetic_cell()[0]
    full = surface.image_surface(rgb, options=MeshOptions(decimate_to=10 ** 6, smooth_iterations=0, engine="numpy"))
    areas = {}
    for engine in ("open3d", "numpy"):
        result = surface.image_surface(rgb, options=MeshOptions(decimate_to=500, smooth_iterations=0, engine=engine))
        assert result.triangles <= 500 and not result.watertight and result.volume is None  # an open 2.5D surface
        assert (result.mesh.face_normals()[:, 2] > 0).mean() > 0.99  # still faces the viewer
        areas[engine] = abs(result.surface_area / full.surface_area - 1)
    assert areas["open3d"] < 0.01 < 0.1 < areas["numpy"], areas  # measured: 0.2 % (499 tri) against 18 % (240 tri)


def test_auto_leaves_a_mesh_under_budget_to_numpy(o3d):
    result = postprocess(tetrahedron(), options=MeshOptions(smooth_iterations=0))
    assert result.engine == "numpy" and result.steps == () and result.mesh is not None


# --------------------------------------------------------------------------- the numpy fallback


@pytest.mark.parametrize("failure", ["missing", "broken"])
def test_numpy_fallback_has_the_same_interface(stack, monkeypatch, failure):
    if failure == "missing":  # import open3d raises ImportError, and find_spec says it is not installed
        monkeypatch.setitem(sys.modules, "open3d", None)
    else:  # installed, but its shared library does not load (Debian without libusb-1.0-0)
        real_import = builtins.__import__

        def fail(name, *args, **kwargs):
            if name.split(".")[0] == "open3d":
                raise OSError("libusb-1.0.so.0: cannot open shared object file")
            return real_import(name, *args, **kwargs)

        monkeypatch.delitem(sys.modules, "open3d", raising=False)
        monkeypatch.setattr(builtins, "__import__", fail)
    result = isosurface.zstack_surface(stack, level=0.5, options=MeshOptions(decimate_to=1000))
    assert isinstance(result, MeshResult) and result.engine == "numpy"
    assert result.steps == ("decimate:cluster", "taubin") and result.triangles <= 1000
    assert result.watertight and result.volume == pytest.approx(VOLUME, rel=0.05)
    assert set(result.summary()) == {"engine", "steps", "triangles_in", "triangles", "watertight", "volume",
                                     "surface_area", "seconds"}
    with pytest.raises(MissingDependencyError, match="pip install open3d") as info:
        postprocess(result.mesh, options=MeshOptions(decimate_to=100, engine="open3d"))
    assert isinstance(info.value, ImportError)


def test_numpy_and_open3d_results_have_the_same_fields(o3d, stack):
    a = isosurface.zstack_surface(stack, level=0.5, options=MeshOptions(decimate_to=1000, engine="numpy"))
    b = isosurface.zstack_surface(stack, level=0.5, options=MeshOptions(decimate_to=1000, engine="open3d"))
    assert set(a.summary()) == set(b.summary()) and type(a) is type(b)
    assert (a.engine, b.engine) == ("numpy", "open3d")


def test_the_pi_path_never_imports_open3d():
    code = ("import sys, numpy as np; from hematovision import mesh; from hematovision.mesh import post, surface, isosurface; "
            "from hematovision.mesh.post import MeshOptions, postprocess, decimation_input_faces; "
            "m = mesh.Mesh([[0,0,0],[1,0,0],[0,1,0],[0,0,1]], [[0,2,1],[0,1,3],[0,3,2],[1,2,3]], np.zeros((4, 3))); "
            "r = postprocess(m, options=MeshOptions(decimate_to=4)); decimation_input_faces('auto', 1000); "
            "r2 = postprocess(m, options=MeshOptions(engine='numpy', decimate_to=4)); "
            "print(r.engine, r2.engine, 'open3d' in sys.modules)")
    assert fresh_python_words(code) == ["numpy", "numpy", "False"]


# --------------------------------------------------------------------------- checks and options


def test_is_closed_on_hand_built_meshes():
    t = tetrahedron()
    result = postprocess(t, options=MeshOptions(smooth_iterations=0, engine="numpy"))
    assert is_closed(t) and result.watertight and result.volume == pytest.approx(1 / 6)
    assert t.surface_area() == pytest.approx(1.5 + math.sqrt(3) / 2)
    assert not is_closed(Mesh(t.vertices, t.faces[:3], t.colors))  # a face missing: a border
    flipped = t.faces.copy()
    flipped[0] = flipped[0, ::-1]
    assert not is_closed(Mesh(t.vertices, flipped, t.colors))  # inconsistent orientation
    assert not is_closed(Mesh(t.vertices, np.zeros((0, 3)), t.colors))


@pytest.mark.parametrize("kwargs,word", [
    (dict(decimate_to=3), "decimate_to"), (dict(decimate_to=2.5), "decimate_to"),
    (dict(decimate_to=True), "decimate_to"),
    (dict(smooth_iterations=-1), "smooth_iterations"), (dict(smooth_iterations="10"), "smooth_iterations"),
    (dict(engine="cuda"), "auto, open3d, numpy"),
])
def test_bad_options_say_what_to_give(kwargs, word):
    with pytest.raises(ValueError, match=word) as info:
        MeshOptions(**kwargs)
    assert "got" in str(info.value)


def test_options_are_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        MeshOptions(1000)  # noqa: the budget must be named
    options = MeshOptions()
    assert (options.decimate_to, options.smooth_iterations, options.engine) == (50_000, 10, "auto")
    with pytest.raises(AttributeError):
        options.engine = "numpy"
    with pytest.raises(ValueError, match="cluster"):
        decimate(tetrahedron(), 4, method="magic")


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("engine", ["numpy", "open3d"])
def test_cli_engine_option(tmp_path, capsys, engine, request):
    if engine == "open3d":
        request.getfixturevalue("o3d")
    src = tmp_path / "stack.tif"
    pages = [Image.fromarray(s) for s in ball_stack(10.0, shape=(26, 26, 26))]
    pages[0].save(src, save_all=True, append_images=pages[1:])
    out = tmp_path / "nuc.glb"
    assert main(["mesh", str(src), "-o", str(out), "--level", "0.5", "--max-triangles", "400", "--engine", engine]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["engine"] == engine and line["faces"] <= 400 and line["watertight"] is True
    assert line["volume"] == pytest.approx(4 / 3 * math.pi * 10.0 ** 3, rel=0.1)
    assert main(["mesh", str(src), "-o", str(out), "--max-triangles", "2"]) == 2
    assert "at least 4" in capsys.readouterr().err


# --------------------------------------------------------------------------- the benchmark's own measure


def test_bench_volume_under_a_surface_is_hand_checked():
    from bench.mesh_open3d import height_volume

    # A unit square at height 2 (two counter-clockwise triangles seen from +z): volume 1 x 2.
    square = Mesh([[0, 0, 2], [1, 0, 2], [1, 1, 2], [0, 1, 2]], [[0, 1, 2], [0, 2, 3]], np.zeros((4, 3)))
    assert height_volume(square) == pytest.approx(2.0)
    # A ramp z = x over the unit square: the mean height is 1/2.
    ramp = Mesh([[0, 0, 0], [1, 0, 1], [1, 1, 1], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]], np.zeros((4, 3)))
    assert height_volume(ramp) == pytest.approx(0.5)
