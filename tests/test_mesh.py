"""3D meshes (hematovision.mesh), the GLB writer (hematovision.mesh.glb) and the ``mesh`` command."""

from __future__ import annotations

import json
import math
import struct

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hematovision.mesh import glb
from hematovision import mesh as M
from hematovision.__main__ import main
from hematovision.cam import heatmap
from hematovision.errors import InvalidImageError, SegmentationError
from tests._data import require_data, synthetic_cell


@pytest.fixture(scope="module")
def cell_image():
    rgb, cell, _ = synthetic_cell()
    return rgb, cell


def ball_stack(radius: float, spacing=(1.0, 1.0, 1.0), shape=(40, 40, 40)) -> np.ndarray:
    """A uint16 stack holding a ball of ``radius`` in physical units at voxel ``spacing`` (z, y, x)."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return ((z * z + y * y + x * x) <= radius * radius).astype(np.uint16) * 4000 + 100


# --------------------------------------------------------------------------- image -> 2.5D


@pytest.mark.parametrize("budget", [300, 2000, None])
def test_image_mesh_respects_the_triangle_budget(cell_image, budget):
    rgb, _ = cell_image
    options = M.IMAGE_OPTIONS if budget is None else M.MeshOptions(decimate_to=budget, smooth_iterations=0)
    mesh = M.mesh_from_image(rgb, options=options)
    assert 0 < mesh.n_faces <= (budget or M.MAX_TRIANGLES)
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int32 and mesh.colors.dtype == np.uint8
    assert np.abs(mesh.vertices[:, :2]).max() <= 0.55  # unit bounding box, centred
    assert mesh.vertices[:, 2].min() >= 0


def test_image_mesh_covers_the_cell_only_and_faces_the_viewer(cell_image):
    rgb, cell = cell_image
    mesh = M.mesh_from_image(rgb)
    # Full resolution: two triangles per pixel square inside the cell (about its area).
    assert mesh.n_faces == pytest.approx(2 * cell.sum(), rel=0.1)
    assert (mesh.face_normals()[:, 2] > 0).mean() > 0.99
    # The top of the dome is near the middle, the nucleus raised by its stain.
    top = mesh.vertices[np.argmax(mesh.vertices[:, 2])]
    assert np.hypot(top[0], top[1]) < 0.2


def test_image_mesh_colours_come_from_the_image(cell_image):
    rgb, cell = cell_image
    mesh = M.mesh_from_image(rgb)
    palette = {tuple(c) for c in rgb[cell]}
    present = np.array([tuple(c) in palette for c in mesh.colors])
    assert present.mean() > 0.97  # the rest: border pixels next to the cell mask


@pytest.mark.parametrize("value,expected", [(1.0, (128, 0, 0)), (0.0, (0, 0, 128))])
def test_cam_colouring_uses_the_jet_heatmap(cell_image, value, expected):
    rgb, _ = cell_image
    cam = np.full(rgb.shape[:2], value, np.float32)
    mesh = M.mesh_from_image(rgb, color="cam", cam=cam)
    assert (mesh.colors == np.array(expected, np.uint8)).all()
    assert tuple(heatmap(np.array([[value]]))[0, 0]) == expected


def test_cam_of_another_size_is_resized(cell_image):
    rgb, _ = cell_image
    cam = np.tile(np.linspace(0, 1, 10, dtype=np.float32), (10, 1))
    colors = M.mesh_from_image(rgb, color="cam", cam=cam).colors
    assert len(np.unique(colors, axis=0)) > 10


@pytest.mark.parametrize("kwargs", [dict(color="cam"), dict(color="rainbow"), dict(color="cam", cam=np.ones(5))])
def test_image_mesh_refuses_bad_options(cell_image, kwargs):
    with pytest.raises(ValueError):
        M.mesh_from_image(cell_image[0], **kwargs)


def test_image_mesh_of_a_blank_image_raises_segmentation_error():
    with pytest.raises(SegmentationError):
        M.mesh_from_image(np.full((64, 64, 3), 250, np.uint8))


# --------------------------------------------------------------------------- z-stack -> isosurface


@pytest.mark.parametrize("radius,spacing", [(12.0, (1.0, 1.0, 1.0)), (12.0, (2.0, 1.0, 1.0)), (3.5, (0.29, 0.26, 0.26))])
def test_sphere_volume_and_area_are_analytic(radius, spacing):
    shape = tuple(int(2 * radius / s) + 12 for s in spacing)
    mesh = M.mesh_from_zstack(ball_stack(radius, spacing, shape), spacing=spacing, level=0.5)
    assert mesh.volume() == pytest.approx(4 / 3 * math.pi * radius ** 3, rel=0.05)
    assert mesh.surface_area() == pytest.approx(4 * math.pi * radius ** 2, rel=0.05)
    radii = np.linalg.norm(mesh.vertices, axis=1)  # centred on the object
    assert np.abs(radii - radius).max() < 0.15 * radius


def test_zstack_mesh_budget_and_default_otsu_level():
    mesh = M.mesh_from_zstack(ball_stack(15.0, shape=(48, 48, 48)), options=M.MeshOptions(decimate_to=1500))
    assert 0 < mesh.n_faces <= 1500 and mesh.volume() > 0


def test_zstack_colours_follow_intensity():
    stack = ball_stack(12.0).astype(np.float32)
    stack[:, :, 20:] *= 0.6  # dimmer half
    mesh = M.mesh_from_zstack(stack, level=0.3)
    bright = mesh.colors[mesh.vertices[:, 0] < -3].astype(int).sum(axis=1).mean()
    dim = mesh.colors[mesh.vertices[:, 0] > 3].astype(int).sum(axis=1).mean()
    assert bright > dim  # viridis: brighter colour for higher intensity


def test_real_nucleus_stack():
    path = require_data("zstack", "nucleus.tif")
    assert M.is_zstack(path)
    spacing = (0.29, 0.26, 0.26)
    mesh = M.mesh_from_zstack(path, spacing=spacing)
    assert 1000 < mesh.n_faces <= M.MAX_TRIANGLES and mesh.volume() > 0
    extent = mesh.vertices.max(axis=0) - mesh.vertices.min(axis=0)
    assert (extent <= np.array([50 * 0.26, 60 * 0.26, 60 * 0.29]) + 0.5).all()  # (x, y, z) inside the stack


def test_read_zstack_from_a_pillow_multipage_tiff(tmp_path):
    stack = ball_stack(6.0, shape=(8, 20, 24)).astype(np.uint16)
    path = tmp_path / "stack.tif"
    pages = [Image.fromarray(s) for s in stack]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert M.is_zstack(path)
    assert np.array_equal(M.read_zstack(path), stack)
    single = tmp_path / "one.tif"
    pages[0].save(single)
    assert not M.is_zstack(single)
    with pytest.raises(InvalidImageError):
        M.read_zstack(single)


def test_zstack_still_offers_the_tiff_limits_and_layout(tmp_path):
    """The header reading lives in mesh.tiff; its limits and StackLayout are the same objects from mesh.zstack."""
    from hematovision.mesh import tiff, zstack

    for name in ("MIN_PAGES", "MAX_PAGES", "MAX_VOXELS", "MAX_PAGE_BYTES", "Z_AXES", "HOW_TO_SHRINK", "StackLayout"):
        assert getattr(zstack, name) is getattr(tiff, name), name
    path = tmp_path / "stack.tif"
    pages = [Image.fromarray(s) for s in ball_stack(6.0, shape=(8, 20, 24)).astype(np.uint16)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    layout = zstack.inspect_zstack(path)
    assert isinstance(layout, tiff.StackLayout) and (layout.pages, layout.height, layout.width) == (8, 20, 24)


@pytest.mark.parametrize("kwargs", [dict(spacing=(1, 1)), dict(spacing=(1, 0, 1)), dict(level=1.5), dict(level=0.0)])
def test_zstack_refuses_bad_options(kwargs):
    with pytest.raises(ValueError):
        M.mesh_from_zstack(ball_stack(8.0, shape=(24, 24, 24)), **kwargs)


@pytest.mark.parametrize("stack", [np.zeros((5, 5)), np.ones((4, 8, 8))])
def test_zstack_refuses_non_stacks(stack):
    with pytest.raises(InvalidImageError):
        M.mesh_from_zstack(stack)


# --------------------------------------------------------------------------- mesh operations


@pytest.fixture(scope="module")
def sphere():
    return M.mesh_from_zstack(ball_stack(15.0, shape=(40, 40, 40)), level=0.5)


@pytest.mark.parametrize("budget", [500, 2000])
def test_cluster_decimation(sphere, budget):
    small = M.decimate(sphere, budget)
    assert 0.3 * budget < small.n_faces <= budget
    assert small.volume() == pytest.approx(sphere.volume(), rel=0.1)
    assert len(small.colors) == small.n_vertices and np.unique(small.faces).size == small.n_vertices


def test_decimation_leaves_small_meshes_alone(sphere):
    assert M.decimate(sphere, sphere.n_faces) is sphere
    with pytest.raises(ValueError):
        M.decimate(sphere, 10, method="magic")


def test_taubin_smoothing_keeps_volume(sphere):
    rng = np.random.default_rng(0)
    noisy = M.Mesh(sphere.vertices + rng.normal(0, 0.3, sphere.vertices.shape), sphere.faces, sphere.colors)
    smooth = M.taubin_smooth(noisy, iterations=10)
    r_noisy = np.linalg.norm(noisy.vertices, axis=1).std()
    r_smooth = np.linalg.norm(smooth.vertices, axis=1).std()
    assert r_smooth < 0.5 * r_noisy
    assert smooth.volume() == pytest.approx(sphere.volume(), rel=0.03)


def test_mesh_validates_its_arrays():
    with pytest.raises(ValueError):
        M.Mesh(np.zeros((3, 3)), [[0, 1, 2]], np.zeros((2, 3)))
    with pytest.raises(ValueError):
        M.Mesh(np.zeros((3, 3)), [[0, 1, 3]], np.zeros((3, 3)))


# --------------------------------------------------------------------------- files, re-read independently


def test_glb_reread_with_pygltflib_and_trimesh(tmp_path, cell_image):
    pygltflib = pytest.importorskip("pygltflib")
    trimesh = pytest.importorskip("trimesh")
    mesh = M.mesh_from_image(cell_image[0])
    path = M.write_glb(mesh, tmp_path / "cell.glb")
    data = path.read_bytes()
    magic, version, length = struct.unpack("<III", data[:12])
    assert (magic, version, length) == (glb.MAGIC, 2, len(data))

    g = pygltflib.GLTF2().load(str(path))
    prim = g.meshes[0].primitives[0]
    assert prim.attributes.POSITION is not None and prim.attributes.NORMAL is not None
    assert prim.attributes.COLOR_0 is not None and prim.indices is not None
    blob = g.binary_blob()

    def read(accessor_index, dtype, width):
        acc = g.accessors[accessor_index]
        view = g.bufferViews[acc.bufferView]
        arr = np.frombuffer(blob, dtype, count=acc.count * width, offset=view.byteOffset + (acc.byteOffset or 0))
        return arr.reshape(acc.count, width) if width > 1 else arr

    assert g.accessors[prim.attributes.POSITION].count == mesh.n_vertices
    assert g.accessors[prim.indices].count == 3 * mesh.n_faces
    assert np.allclose(read(prim.attributes.POSITION, "<f4", 3), mesh.vertices)
    assert np.allclose(read(prim.attributes.COLOR_0, "<f4", 3), glb.srgb_to_linear(mesh.colors), atol=1e-6)
    assert np.allclose(np.linalg.norm(read(prim.attributes.NORMAL, "<f4", 3), axis=1), 1.0, atol=1e-4)
    assert np.array_equal(read(prim.indices, "<u4", 1).reshape(-1, 3), mesh.faces)
    assert g.accessors[prim.attributes.POSITION].min == pytest.approx(mesh.vertices.min(axis=0).tolist())

    scene = trimesh.load(str(path), process=False)
    (tm,) = scene.geometry.values()
    assert tm.vertices.shape == (mesh.n_vertices, 3) and tm.faces.shape == (mesh.n_faces, 3)
    assert np.allclose(tm.visual.vertex_attributes["color"][:, :3], glb.srgb_to_linear(mesh.colors), atol=1e-6)


def test_glb_of_a_full_budget_mesh_is_under_2_mb(tmp_path):
    options = M.MeshOptions(smooth_iterations=0)
    mesh = M.mesh_from_zstack(ball_stack(40.0, shape=(90, 90, 90)), level=0.5, options=options)
    assert 0.5 * M.MAX_TRIANGLES < mesh.n_faces <= M.MAX_TRIANGLES
    assert M.write_glb(mesh, tmp_path / "big.glb").stat().st_size <= 2 * 1024 * 1024


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_ply_and_obj_reread_with_trimesh(tmp_path, sphere, suffix):
    trimesh = pytest.importorskip("trimesh")
    path = M.write_mesh(sphere, tmp_path / f"sphere{suffix}")
    tm = trimesh.load(str(path), process=False, force="mesh")
    assert tm.vertices.shape == (sphere.n_vertices, 3) and tm.faces.shape == (sphere.n_faces, 3)
    assert np.allclose(tm.vertices, sphere.vertices, atol=1e-4)
    assert np.abs(tm.visual.vertex_colors[:, :3].astype(int) - sphere.colors).max() <= 1


@pytest.mark.parametrize("suffix", [".glb", ".ply", ".obj"])
def test_a_write_that_fails_half_way_keeps_the_earlier_file(tmp_path, sphere, suffix, monkeypatch):
    """Nothing saved is lost: the earlier mesh stays byte for byte, and no partial file is left beside it."""
    path = M.write_mesh(sphere, tmp_path / f"cell{suffix}")
    before = path.read_bytes()

    def dies_half_way(mesh, target):
        Path(target).write_bytes(before[: len(before) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(M.WRITERS, suffix, dies_half_way)
    with pytest.raises(OSError, match="No space"):
        M.write_mesh(sphere, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_complete_write_replaces_the_earlier_file(tmp_path, sphere):
    path = tmp_path / "cell.ply"
    path.write_bytes(b"an earlier mesh")
    assert M.write_mesh(sphere, path) == path
    assert path.read_bytes().startswith(b"ply") and sorted(p.name for p in tmp_path.iterdir()) == ["cell.ply"]


def test_write_mesh_refuses_unknown_formats(tmp_path, sphere):
    with pytest.raises(ValueError):
        M.write_mesh(sphere, tmp_path / "x.stl")


# --------------------------------------------------------------------------- CLI


def test_cli_image_to_glb(tmp_path, capsys, cell_image):
    src = tmp_path / "cell.png"
    Image.fromarray(cell_image[0]).save(src)
    out = tmp_path / "cell.glb"
    assert main(["mesh", str(src), "-o", str(out)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["kind"] == "image" and line["bytes"] == out.stat().st_size and line["faces"] > 0


def test_cli_zstack_to_ply(tmp_path, capsys):
    src = tmp_path / "stack.tif"
    pages = [Image.fromarray(s) for s in ball_stack(6.0, spacing=(2, 1, 1), shape=(10, 24, 24))]
    pages[0].save(src, save_all=True, append_images=pages[1:])
    out = tmp_path / "nuc.ply"
    assert main(["mesh", str(src), "-o", str(out), "--spacing", "2", "1", "1", "--level", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "zstack" and out.stat().st_size > 0
    assert main(["mesh", str(src), "-o", str(out), "--color", "cam"]) == 2


@pytest.mark.parametrize("args,code", [(["missing.png", "-o", "x.glb"], 1), (["x.png", "-o", "x.stl"], 2),
                                       (["x.png", "-o", "x.glb", "--level", "2"], 2)])
def test_cli_errors(tmp_path, capsys, args, code):
    args = [str(tmp_path / a) if a.startswith(("missing", "x.")) else a for a in args]
    assert main(["mesh", *args]) == code
    assert "error:" in capsys.readouterr().err


def test_cli_cam_colouring_with_the_shipped_model(tmp_path, capsys):
    """``mesh --color cam`` end to end on a real example cell with the shipped ``wbc`` model."""
    from tests.conftest import EXAMPLES, models_dir

    if not (models_dir() / "wbc.json").exists():
        pytest.skip("models/wbc.json not shipped")
    src = sorted((EXAMPLES / "wbc").glob("neutrophil__*"))[0]
    by_image, by_cam = tmp_path / "image.glb", tmp_path / "cam.glb"
    assert main(["mesh", str(src), "-o", str(by_image)]) == 0
    assert main(["mesh", str(src), "-o", str(by_cam), "--color", "cam", "--model", "wbc"]) == 0
    capsys.readouterr()
    # The same surface, coloured by the model's own CAM of this image: the CLI writes what the API gives.
    import hematovision
    from hematovision.images import load_image

    rgb = load_image(src)
    cam = hematovision.load_model("wbc").predict(rgb).cam
    expected = M.image_surface(rgb, color="cam", cam=cam).mesh
    assert by_cam.read_bytes() == glb.glb_bytes(expected.vertices, expected.faces, expected.colors,
                                                 expected.vertex_normals(), name="cam")
    assert by_cam.read_bytes() != by_image.read_bytes()
    # JET: the hottest (red) vertices lie where the CAM is high, on the cell, not on the colder rim.
    red = expected.colors[:, 0].astype(int) - expected.colors[:, 2]
    radius = np.hypot(expected.vertices[:, 0], expected.vertices[:, 1])
    assert radius[red >= np.percentile(red, 90)].mean() < 0.8 * radius.mean()


# --------------------------------------------------------------------------- tiny budgets: never an empty mesh


def _tiny_budget_input(tmp_path, kind, cell_image):
    if kind == "image":
        src = tmp_path / "cell.png"
        Image.fromarray(cell_image[0]).save(src)
    else:
        # A flat cell (semi-axes 7.6, 19, 19 voxels): a marching step coarse enough for a tiny budget skips it.
        src = tmp_path / "stack.tif"
        pages = [Image.fromarray(s) for s in ball_stack(19.0, spacing=(2.5, 1.0, 1.0), shape=(20, 64, 64))]
        pages[0].save(src, save_all=True, append_images=pages[1:])
    return src


@pytest.mark.parametrize("kind", ["image", "zstack"])
@pytest.mark.parametrize("budget", [4, 5, 12, 20])
@pytest.mark.parametrize("engine", ["numpy", "open3d"])
def test_cli_tiny_budget_gives_a_mesh_never_an_empty_file(tmp_path, capsys, cell_image, kind, budget, engine):
    """A grid or marching step too coarse for the cell used to give 0 triangles (written, exit 0) or a
    scikit-image RuntimeError; the builders now fall back to a finer sampling and decimate that."""
    if engine == "open3d":
        pytest.importorskip("open3d", reason="the open3d engine needs Open3D")
    out = tmp_path / "t.glb"
    code = main(["mesh", str(_tiny_budget_input(tmp_path, kind, cell_image)), "-o", str(out),
                 "--max-triangles", str(budget), "--engine", engine])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    line = json.loads(captured.out)
    assert 0 < line["faces"] <= budget and line["vertices"] >= 3 and out.stat().st_size == line["bytes"]


def test_an_empty_mesh_is_an_error_never_a_file(tmp_path):
    empty = M.Mesh(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="no surface to mesh"):
        M.postprocess(empty, options=M.MeshOptions(decimate_to=4, engine="numpy"))
    with pytest.raises(ValueError, match="no triangles"):
        M.write_mesh(empty, tmp_path / "empty.glb")
    assert not (tmp_path / "empty.glb").exists()


def test_decimation_that_leaves_nothing_says_to_raise_the_budget(monkeypatch):
    from hematovision.mesh import post

    sphere = M.mesh_from_zstack(ball_stack(8.0, shape=(24, 24, 24)), level=0.5,
                                options=M.MeshOptions(decimate_to=10 ** 6, smooth_iterations=0, engine="numpy"))
    monkeypatch.setattr(post, "decimate", lambda mesh, budget, method: M.Mesh(np.zeros((0, 3)), np.zeros((0, 3)),
                                                                               np.zeros((0, 3))))
    with pytest.raises(ValueError, match="raise the triangle budget"):
        post.postprocess(sphere, options=M.MeshOptions(decimate_to=4, engine="numpy"))
