"""Issue 16, defects 1, 4 and 5: z-stack bombs, z-stack layouts, and Pillow's decompression-bomb guard.

The memory checks run in a child process whose address space is capped
(RLIMIT_AS, a little over what it has mapped once its libraries are loaded),
so code that decodes a whole bomb fails fast with MemoryError instead of
taking the test machine down; peak RSS growth is the peak (VmHWM, reset
through /proc/self/clear_refs just before the call) less the RSS then.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hematovision import ImageTooLargeError, InvalidImageError, load_image
from hematovision.__main__ import main
from tests.conftest import ROOT, require_data
from tests.test_mesh_open3d import fresh_python_words

tifffile = pytest.importorskip("tifffile", reason="z-stacks are read with tifffile (installed with scikit-image)")

#: Pillow's own default, computed as Pillow does (not read from a process that may have changed it).
PILLOW_DEFAULT_LIMIT = int(1024 * 1024 * 1024 // 4 // 3)
#: The z-stack bomb of the issue: 128 x 2048 x 2048 16-bit zeros, zlib: about 1 MB on disk, 537 M voxels.
BOMB_SHAPE = (128, 2048, 2048)
#: Within the voxel budget but far over the analysis resolution: 64 x 2048 x 2048 = 268 M voxels.
BIG_SHAPE = (64, 2048, 2048)
DISC_RADIUS = 600  # pixels, the cylinder inside BIG_SHAPE
DISC_PAGES = range(8, 56)


def _write_precompressed(path: Path, pages: list[np.ndarray], order: list[int]) -> Path:
    """A zlib TIFF whose page k holds ``pages[order[k]]``; each distinct page is compressed once (fast)."""
    blobs = [zlib.compress(p.tobytes(), 6) for p in pages]
    z, (h, w) = len(order), pages[0].shape
    tifffile.imwrite(path, (blobs[i] for i in order), shape=(z, h, w), dtype=pages[0].dtype, rowsperstrip=h,
                     compression="zlib")
    return path


@pytest.fixture(scope="module")
def zstack_bomb(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.tif"
    _write_precompressed(path, [np.zeros(BOMB_SHAPE[1:], np.uint16)], [0] * BOMB_SHAPE[0])
    assert path.stat().st_size < 2_000_000
    return path


@pytest.fixture(scope="module")
def big_cylinder(tmp_path_factory) -> Path:
    """BIG_SHAPE, zeros except a disc of DISC_RADIUS (value 1000) on the DISC_PAGES: a cylinder."""
    z, h, w = BIG_SHAPE
    yy, xx = np.ogrid[:h, :w]
    disc = (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) <= DISC_RADIUS ** 2).astype(np.uint16) * 1000
    order = [1 if k in DISC_PAGES else 0 for k in range(z)]
    path = tmp_path_factory.mktemp("big") / "cylinder.tif"
    _write_precompressed(path, [np.zeros((h, w), np.uint16), disc], order)
    assert path.stat().st_size < 5_000_000
    return path


HARNESS = """
import json, resource, sys, time
import numpy, cv2, tifffile, PIL.Image
try:
    import skimage.measure
except ImportError:
    pass
import hematovision.mesh, hematovision.__main__
from hematovision.mesh import mesh_from_zstack

def vm_kb(key):
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key))

headroom = {headroom_mb} * 2**20
limit = vm_kb('VmSize:') * 1024 + headroom
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:  # reset the peak (VmHWM) to the current RSS: the import's own peak must not count
    with open('/proc/self/clear_refs', 'w') as fh:
        fh.write('5')
except OSError:
    pass
base = vm_kb('VmRSS:') * 1024
t0 = time.perf_counter()
out = {{}}
try:
{body}
    out['outcome'] = 'ok'
except MemoryError:
    out['outcome'] = 'MemoryError'
except Exception as exc:
    out['outcome'] = type(exc).__name__
    out['message'] = str(exc)
out['growth_mb'] = (vm_kb('VmHWM:') * 1024 - base) / 2**20
out['seconds'] = time.perf_counter() - t0
print(json.dumps(out))
"""


def _bounded(body: str, *, headroom_mb: int = 1500) -> tuple[dict, str]:
    """Run ``body`` (Python, may set ``out[...]``) in a child with a capped address space; (result, stderr)."""
    code = HARNESS.format(headroom_mb=headroom_mb, body=textwrap.indent(textwrap.dedent(body), "    "))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


# --------------------------------------------------------------------------- defect 1: the z-stack bomb


def test_zstack_bomb_is_refused_from_its_header_in_bounded_memory(zstack_bomb):
    result, _ = _bounded(f"mesh_from_zstack({str(zstack_bomb)!r})")
    assert result["outcome"] == "ZStackTooLargeError", result
    message = result["message"]
    assert "536,870,912 voxels" in message and "budget" in message
    assert "Fiji" in message and "tifffile" in message  # says how to crop / downsample
    assert result["growth_mb"] < 50 and result["seconds"] < 10, result


def test_zstack_bomb_error_is_a_value_error(zstack_bomb):
    from hematovision.errors import ImageTooLargeError as TooLarge, ZStackTooLargeError
    from hematovision.mesh.zstack import inspect_zstack

    with pytest.raises(ZStackTooLargeError) as info:
        inspect_zstack(zstack_bomb)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TooLarge)
    assert inspect_zstack(zstack_bomb, max_voxels=2 ** 30).pages == BOMB_SHAPE[0]  # the budget is a keyword


def test_big_stack_within_budget_is_meshed_at_analysis_resolution_in_bounded_memory(big_cylinder):
    result, _ = _bounded(f"""
        from hematovision.mesh.zstack import load_zstack
        stack = load_zstack({str(big_cylinder)!r})
        out['shape'], out['scale'] = list(stack.voxels.shape), list(stack.scale)
        mesh = mesh_from_zstack(stack)
        out['volume'], out['faces'] = mesh.volume(), mesh.n_faces
    """)
    assert result["outcome"] == "ok", result
    assert result["shape"] == [64, 256, 256] and result["scale"] == [1.0, 8.0, 8.0]
    # In source voxels: the cylinder's volume, pi r^2 x its number of pages.
    assert result["volume"] == pytest.approx(np.pi * DISC_RADIUS ** 2 * len(DISC_PAGES), rel=0.06)
    assert result["growth_mb"] < 400, result  # the whole stack as float32 alone would be 1 GiB


@pytest.mark.parametrize("shape,voxels,side,expected", [
    ((10, 40, 30), 10 ** 6, 256, ((10, 40, 30), (1.0, 1.0, 1.0))),  # small: kept as it is
    ((10, 512, 256), 10 ** 6, 128, ((10, 128, 64), (1.0, 4.0, 4.0))),  # in-plane area averaging
    ((100, 40, 40), 40 * 40 * 30, 256, ((25, 40, 40), (4.0, 1.0, 1.0))),  # runs of 4 planes along z
    ((7, 20, 20), 20 * 20 * 3, 256, ((3, 20, 20), (3.0, 1.0, 1.0))),  # the last run holds one plane
])
def test_reduce_planes_means(shape, voxels, side, expected):
    from hematovision.mesh.zstack import reduce_planes

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 1000, shape).astype(np.uint16)
    out = reduce_planes(iter(stack), shape, analysis_voxels=voxels, analysis_side=side)
    assert (out.voxels.shape, out.scale) == expected and out.source_shape == shape
    kz = int(out.scale[0])
    assert out.voxels[-1].mean() == pytest.approx(stack[(len(out.voxels) - 1) * kz:].mean(), rel=1e-4)
    assert out.voxels.mean() == pytest.approx(stack.mean(), rel=0.02)  # area averaging keeps the mean


# --------------------------------------------------------------------------- defect 4: z-stack layouts


def _pages(n=6, h=32, w=40) -> np.ndarray:
    stack = np.full((n, h, w), 100, np.uint16)
    stack[1:-1, 8:24, 10:30] = 3000
    return stack


def _rgb_cell() -> np.ndarray:
    rgb = np.full((160, 160, 3), 90, np.uint8)
    rgb[40:120, 40:120] = (200, 60, 150)  # something to mesh if the page were misread as a (160, 160, 3) stack
    return rgb


def _single_rgb_pillow(d: Path) -> Path:
    Image.fromarray(_rgb_cell()).save(d / "rgb.tif")
    return d / "rgb.tif"


def _single_rgb_tifffile(d: Path) -> Path:
    tifffile.imwrite(d / "rgb-t.tif", _rgb_cell())
    return d / "rgb-t.tif"


def _single_grey(d: Path) -> Path:
    tifffile.imwrite(d / "grey.tif", _pages()[2])
    return d / "grey.tif"


def _hyperstack(d: Path) -> Path:
    tifffile.imwrite(d / "zc.tif", np.stack([_pages()] * 2, axis=1), imagej=True, metadata={"axes": "ZCYX"})
    return d / "zc.tif"


def _time_series(d: Path) -> Path:
    tifffile.imwrite(d / "t.tif", _pages(), imagej=True, metadata={"axes": "TYX"})
    return d / "t.tif"


def _channels(d: Path) -> Path:
    tifffile.imwrite(d / "c.tif", _pages(3), imagej=True, metadata={"axes": "CYX"})
    return d / "c.tif"


def _mixed_sizes(d: Path) -> Path:
    tifffile.imwrite(d / "mixed.tif", _pages()[0])
    tifffile.imwrite(d / "mixed.tif", _pages(h=16)[0], append=True)
    return d / "mixed.tif"


def _five_samples(d: Path) -> Path:
    tifffile.imwrite(d / "s5.tif", np.zeros((3, 32, 40, 5), np.uint8), photometric="minisblack", planarconfig="contig")
    return d / "s5.tif"


def _corrupt_data(d: Path) -> Path:
    tifffile.imwrite(d / "ok.tif", np.random.default_rng(0).integers(0, 4000, (6, 64, 64), dtype=np.uint16),
                     compression="zlib")
    with tifffile.TiffFile(d / "ok.tif") as tif:
        start = tif.pages[2].dataoffsets[0] + 100  # inside page 3's compressed pixels, not its header
    data = bytearray((d / "ok.tif").read_bytes())
    data[start: start + 64] = bytes(64)
    (d / "corrupt.tif").write_bytes(bytes(data))
    return d / "corrupt.tif"


def _truncated(d: Path) -> Path:
    tifffile.imwrite(d / "ok2.tif", np.random.default_rng(1).integers(0, 4000, (6, 64, 64), dtype=np.uint16),
                     compression="zlib")
    data = (d / "ok2.tif").read_bytes()
    (d / "truncated.tif").write_bytes(data[: len(data) // 2])
    return d / "truncated.tif"


def _not_a_tiff(d: Path) -> Path:
    (d / "notes.tif").write_text("not a TIFF at all\n" * 20)
    return d / "notes.tif"


BAD_STACKS = [  # (maker, error class name, words in the message)
    (_single_rgb_pillow, "ZStackError", ["at least 2 pages", "single 2-D image", "Classify"]),
    (_single_rgb_tifffile, "ZStackError", ["at least 2 pages", "single 2-D image", "RGB"]),
    (_single_grey, "ZStackError", ["at least 2 pages", "single 2-D image"]),
    (_hyperstack, "ZStackError", ["ZCYX", "one stack axis", "Reduce Dimensionality"]),
    (_time_series, "ZStackError", ["time points", "Image > Properties"]),
    (_channels, "ZStackError", ["channels"]),
    (_mixed_sizes, "ZStackError", ["page 2", "same size"]),
    (_five_samples, "ZStackError", ["5 samples per pixel"]),
    (_corrupt_data, "InvalidImageError", ["corrupt or truncated"]),
    (_truncated, "InvalidImageError", ["truncated"]),
    (_not_a_tiff, "InvalidImageError", ["not a readable TIFF"]),
]


@pytest.mark.parametrize("make,error,words", BAD_STACKS, ids=[m.__name__[1:] for m, _, _ in BAD_STACKS])
def test_bad_stack_layouts_are_refused_with_a_fix(tmp_path, make, error, words):
    from hematovision import errors
    from hematovision.mesh import mesh_from_zstack

    path = make(tmp_path)
    with pytest.raises(InvalidImageError) as info:
        mesh_from_zstack(path)
    assert isinstance(info.value, getattr(errors, error)), repr(info.value)
    for word in words:
        assert word in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def _appended(d: Path, stack: np.ndarray) -> Path:
    for page in stack:  # one tifffile series per page
        tifffile.imwrite(d / "appended.tif", page, append=True)
    return d / "appended.tif"


def _writer_pages(d: Path, stack: np.ndarray) -> Path:
    with tifffile.TiffWriter(d / "writer.tif") as tw:
        for page in stack:
            tw.write(page)
    return d / "writer.tif"


def _pillow_pages(d: Path, stack: np.ndarray) -> Path:
    pages = [Image.fromarray(p) for p in stack]
    pages[0].save(d / "pillow.tif", save_all=True, append_images=pages[1:])
    return d / "pillow.tif"


def _imagej_z(d: Path, stack: np.ndarray) -> Path:
    tifffile.imwrite(d / "ij.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    return d / "ij.tif"


@pytest.mark.parametrize("make", [_appended, _writer_pages, _pillow_pages, _imagej_z])
def test_stacks_written_page_by_page_are_one_stack(tmp_path, make):
    from hematovision.mesh import is_zstack, mesh_from_zstack, read_zstack

    stack = _pages()
    path = make(tmp_path, stack)
    assert is_zstack(path)
    assert np.array_equal(read_zstack(path), stack)
    assert mesh_from_zstack(path, level=0.5).n_faces > 0


@pytest.mark.parametrize("planar", [False, True])
def test_rgb_pages_become_grey_as_the_mean_of_r_g_b(tmp_path, planar):
    from hematovision.mesh.zstack import read_zstack

    rgb = np.zeros((4, 20, 24, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 30, 60, 120
    data = np.moveaxis(rgb, -1, 1) if planar else rgb
    path = tmp_path / "rgb-stack.tif"
    tifffile.imwrite(path, data, photometric="rgb", planarconfig="separate" if planar else "contig")
    grey = read_zstack(path)
    assert grey.shape == (4, 20, 24) and np.allclose(grey, 70.0)


def test_real_confocal_stack_layout_is_accepted():
    from hematovision.mesh.zstack import inspect_zstack, load_zstack

    path = require_data("zstack", "nucleus.tif")
    layout = inspect_zstack(path)
    assert (layout.pages, layout.height, layout.width, layout.samples) == (60, 60, 50, 1)
    stack = load_zstack(path)
    assert stack.voxels.shape == (60, 60, 50) and stack.scale == (1.0, 1.0, 1.0)  # small: not reduced
    assert np.array_equal(stack.voxels, tifffile.imread(path).astype(np.float32))


def test_is_zstack_without_tifffile_falls_back_to_pillow(tmp_path, monkeypatch):
    from hematovision.mesh.zstack import is_zstack

    stack_path = _pillow_pages(tmp_path, _pages())
    single = _single_grey(tmp_path)
    monkeypatch.setitem(sys.modules, "tifffile", None)  # import tifffile now raises ImportError
    assert is_zstack(stack_path) and not is_zstack(single)


# --------------------------------------------------------------------------- the mesh CLI on bad z-stacks


CLI_BAD = [(_hyperstack, "one stack axis"), (_time_series, "time points"), (_mixed_sizes, "same size"),
           (_corrupt_data, "corrupt or truncated"), (_truncated, "truncated")]


@pytest.mark.parametrize("make,words", CLI_BAD, ids=[m.__name__[1:] for m, _ in CLI_BAD])
def test_cli_mesh_refuses_bad_stacks_in_one_line(tmp_path, capsys, make, words):
    path = make(tmp_path)
    assert main(["mesh", str(path), "-o", str(tmp_path / "out.glb")]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_cli_mesh_refuses_the_bomb_in_one_line_and_bounded_memory(zstack_bomb, tmp_path):
    out = tmp_path / "bomb.glb"
    result, stderr = _bounded(f"out['code'] = hematovision.__main__.main(['mesh', {str(zstack_bomb)!r}, '-o', "
                              f"{str(out)!r}])")
    assert result["outcome"] == "ok" and result["code"] == 1, result
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "exceeds the z-stack budget" in lines[0] and "Traceback" not in stderr, stderr
    assert result["growth_mb"] < 50 and not out.exists(), result


def test_cli_mesh_reports_the_analysis_resolution(tmp_path, capsys):
    path = _appended(tmp_path, _pages())
    out = tmp_path / "stack.ply"
    assert main(["mesh", str(path), "-o", str(out), "--level", "0.5"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["kind"] == "zstack" and line["voxels"] == [6, 32, 40] and line["analysis_voxels"] == [6, 32, 40]


# --------------------------------------------------------------------------- defect 5: Pillow's bomb guard


def test_importing_hematovision_leaves_pillow_bomb_guard_on():
    code = ("import importlib, PIL.Image as I; before = I.MAX_IMAGE_PIXELS\n"
            "for name in ('hematovision', 'hematovision.images', 'hematovision.mesh', 'hematovision.mesh.zstack', "
            "'hematovision.mesh.isosurface', 'hematovision.__main__'):\n"
            "    try:\n        importlib.import_module(name)\n    except ModuleNotFoundError:\n        pass\n"
            "print(before, I.MAX_IMAGE_PIXELS)")
    assert fresh_python_words(code) == [str(PILLOW_DEFAULT_LIMIT)] * 2


def _one_bit_png(path: Path, side: int) -> Path:
    Image.new("1", (side, side)).save(path)
    return path


@pytest.mark.parametrize("side", [10_000, 30_000])  # over Pillow's warning limit; over twice it (its error)
def test_bombs_are_still_refused_and_the_guard_stays_on(tmp_path, side):
    path = _one_bit_png(tmp_path / f"bomb{side}.png", side)
    filters = list(warnings.filters)
    with pytest.raises(ImageTooLargeError, match="exceeds the budget of 40,000,000; crop or downscale"):
        load_image(path)
    with pytest.raises(ImageTooLargeError, match="exceeds the budget"):
        load_image(path.read_bytes())
    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_LIMIT and warnings.filters == filters


def test_a_40_megapixel_image_within_the_budget_still_loads(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (8000, 5000), 200).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        rgb = load_image(path)
    assert rgb.shape == (5000, 8000, 3) and int(rgb[0, 0, 0]) == 200
    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_LIMIT


def test_pillow_limit_set_by_the_program_is_respected_and_explained(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # a program that tightens Pillow's guard
    warned = _one_bit_png(tmp_path / "warned.png", 1200)  # 1.44 MP: Pillow only warns; within our budget
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(warned).shape == (1200, 1200, 3)
    refused = _one_bit_png(tmp_path / "refused.png", 1500)  # 2.25 MP: over twice Pillow's limit
    with pytest.raises(ImageTooLargeError, match="MAX_IMAGE_PIXELS"):
        load_image(refused)
    assert Image.MAX_IMAGE_PIXELS == 1_000_000


@pytest.mark.parametrize("name,module", [("mesh_from_zstack", "isosurface"), ("normalise_stack", "isosurface"),
                                         ("gaussian_3d", "isosurface"), ("is_zstack", "zstack"),
                                         ("read_zstack", "zstack"), ("load_zstack", "zstack"), ("ZStack", "zstack")])
def test_zstack_names_still_import_from_mesh(name, module):
    import importlib

    from hematovision import mesh

    assert getattr(mesh, name) is getattr(importlib.import_module(f"hematovision.mesh.{module}"), name)
    with pytest.raises(AttributeError):
        mesh.no_such_name  # noqa: B018
