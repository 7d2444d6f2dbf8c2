"""The web app (app.py) through its public API: gradio_client against the app served in-process.

Uses the shipped models (models/wbc.json, models/all.json, or $HEMATOVISION_MODELS)
and the real example images; skips with a reason when the models are not there.
"""

import csv
import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import EXAMPLES, ROOT, app_process, import_app, models_dir, require_data, serve  # noqa: F401 - re-exported

pytest.importorskip("gradio", reason="the app needs gradio (requirements.txt)")
gradio_client = pytest.importorskip("gradio_client", reason="the API tests need gradio_client (requirements.txt)")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

ENDPOINTS = ("/classify", "/explain", "/mesh", "/zstack_mesh", "/morphology", "/batch", "/model_card")
WBC_EXAMPLE = EXAMPLES / "wbc" / "neutrophil__BNE_107370.jpg"
ALL_EXAMPLE = EXAMPLES / "all" / "pro_b__WBC-Malignant-Pro-013.jpg"


@pytest.fixture(scope="module")
def client(url):
    return Client(url, verbose=False)


def labels_of(label_output: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label_output["confidences"]}


def rows_of(table: dict) -> list[dict]:
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def load_glb(path):
    trimesh = pytest.importorskip("trimesh")
    scene = trimesh.load(path, force="scene")
    meshes = list(scene.geometry.values())
    assert meshes and all(len(m.faces) > 0 for m in meshes), f"{path} holds no triangles"
    return meshes


# --------------------------------------------------------------------------- API surface and limits


def test_every_endpoint_is_named_in_the_api(client):
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(ENDPOINTS) <= set(named)


def test_limits_are_set(app, url):
    assert app.demo.max_file_size == 50 * 1024 * 1024
    from hematovision.web.queue import QUEUE_CONCURRENCY

    assert app.demo._queue.default_concurrency_limit == QUEUE_CONCURRENCY == 1  # measured: bench/results/concurrency.md
    assert app.demo._queue.max_size == 64


# --------------------------------------------------------------------------- endpoints with real examples


@pytest.mark.parametrize("model, example", [("wbc", WBC_EXAMPLE), ("all", ALL_EXAMPLE)])
def test_classify_returns_calibrated_labels(app, client, model, example):
    label, verdict, result = client.predict(handle_file(example), model, api_name="/classify")
    probs = labels_of(label)
    assert set(probs) == set(app.MODELS[model].labels)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
    assert label["label"] == max(probs, key=probs.get) == result["label"]
    assert isinstance(result["uncertain"], bool) and result["model"] == model
    assert ("Uncertain" in verdict) == result["uncertain"]
    assert isinstance(result["atypical"], bool)  # the shipped models carry ood.atypical_threshold


def test_explain_overlay_has_the_image_size(client):
    path = client.predict(handle_file(WBC_EXAMPLE), "wbc", 0.6, api_name="/explain")
    with Image.open(path) as overlay, Image.open(WBC_EXAMPLE) as original:
        assert overlay.size == original.size
        assert overlay.mode == "RGB"
        # Opacity 0 is the image itself (up to JPEG decoding), so the slider really blends.
    plain = client.predict(handle_file(WBC_EXAMPLE), "wbc", 0.0, api_name="/explain")
    assert np.abs(np.asarray(Image.open(plain), np.int16) - np.asarray(Image.open(WBC_EXAMPLE).convert("RGB"), np.int16)).max() <= 1


@pytest.mark.parametrize("colour", ["image", "cam"])
def test_mesh_is_a_glb_that_parses(client, colour):
    path = client.predict(handle_file(WBC_EXAMPLE), "wbc", colour, api_name="/mesh")
    assert Path(path).suffix == ".glb"
    load_glb(path)
    pygltflib = pytest.importorskip("pygltflib")
    attributes = pygltflib.GLTF2().load(path).meshes[0].primitives[0].attributes
    assert attributes.POSITION is not None and attributes.COLOR_0 is not None  # coloured by the image or the heatmap


def test_zstack_mesh_is_an_isosurface(client):
    stack = require_data("zstack", "nucleus.tif")
    path = client.predict(handle_file(stack), api_name="/zstack_mesh")
    meshes = load_glb(path)
    assert sum(len(m.faces) for m in meshes) > 100


def test_morphology_compares_with_the_normal_range(client):
    table, plot, summary = client.predict(handle_file(WBC_EXAMPLE), "wbc", api_name="/morphology")
    rows = rows_of(table)
    names = {r["feature"] for r in rows}
    assert {"N:C area ratio", "Cell circularity"} <= names
    if (models_dir() / "wbc.morphology.json").exists():
        assert all(r["status"] in ("normal", "low", "high") for r in rows)
        assert plot is not None and "normal" in summary


def test_batch_gives_table_differential_and_csv(app, client, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    files = sorted((EXAMPLES / "wbc").glob("*.jpg"))[:6] + [bad]
    table, diff, plot, csv_path, summary = client.predict([handle_file(f) for f in files], "wbc", api_name="/batch")
    rows = rows_of(table)
    assert [r["file"] for r in rows] == [f.name for f in files]
    assert all(r["label"] in app.MODELS["wbc"].labels and 0 < float(r["confidence"]) <= 1 for r in rows[:-1])
    assert rows[-1]["label"] is None and "notes.jpg" in rows[-1]["error"] and str(tmp_path) not in rows[-1]["error"]
    counts = rows_of(diff)
    assert [r["class"] for r in counts] == list(app.MODELS["wbc"].labels)
    assert sum(r["count"] for r in counts) == 6
    assert sum(r["percent"] for r in counts) == pytest.approx(100.0, abs=0.5)
    with open(csv_path, newline="", encoding="utf-8") as fh:
        parsed = list(csv.DictReader(fh))
    assert [r["file"] for r in parsed] == [f.name for f in files]
    # The page shows what the CSV says: the same 4-decimal confidence strings (not 1 for 1.0000).
    assert [r["confidence"] or "" for r in rows] == [r["confidence"] for r in parsed]
    assert all(re.fullmatch(r"[01]\.\d{4}", r["confidence"]) for r in rows[:-1])
    assert "6** of 7 files classified" in summary


def test_model_card(client):
    for model in ("wbc", "all"):
        card = client.predict(model, api_name="/model_card")
        assert len(card) > 100 and "<script" not in card.lower()


def test_the_limits_point_to_the_cross_lab_figures_of_the_white_cell_cards(client):
    """The About tab says other labs' cells are a problem and where the measured figures are; that section must exist."""
    from hematovision.web.about_tab import ABOUT

    assert "research tool, not a diagnostic device" in ABOUT and '("Cross-lab accuracy")' in ABOUT
    for model in ("wbc", "wbc-crosslab"):
        assert "## Cross-lab accuracy" in client.predict(model, api_name="/model_card")


# --------------------------------------------------------------------------- bad uploads: an error, not a crash


def _bad_files(tmp_path) -> dict[str, Path]:
    data = WBC_EXAMPLE.read_bytes()
    files = {
        "not_an_image": tmp_path / "notes.jpg",
        "truncated": tmp_path / "truncated.jpg",
        "huge": tmp_path / "huge.png",
        "empty": tmp_path / "empty.png",
    }
    files["not_an_image"].write_text("this is a text file, not an image\n")
    files["truncated"].write_bytes(data[: len(data) // 2])
    Image.new("1", (8000, 6000)).save(files["huge"])  # 48 MP, a few KB: refused before decoding
    files["empty"].write_bytes(b"")
    return files


EXPECTED = {"not_an_image": "not a readable image", "truncated": "truncated", "huge": "exceeds the budget", "empty": "empty"}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_bad_upload_is_an_error_and_the_app_keeps_serving(client, tmp_path, kind):
    path = _bad_files(tmp_path)[kind]
    for endpoint, args in (("/classify", ("wbc",)), ("/explain", ("wbc", 0.5)), ("/morphology", ("wbc",)), ("/mesh", ("wbc", "image"))):
        with pytest.raises(AppError, match=EXPECTED[kind]) as info:
            client.predict(handle_file(path), *args, api_name=endpoint)
        assert "/gradio" not in str(info.value), "the message must name the user's file, not the server's temp path"
    label, _, _ = client.predict(handle_file(WBC_EXAMPLE), "wbc", api_name="/classify")
    assert sum(labels_of(label).values()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("kind", ["16-bit grayscale", "RGBA"])
def test_16_bit_and_rgba_images_are_converted_and_classified(client, tmp_path, kind):
    rgb = np.asarray(Image.open(WBC_EXAMPLE).convert("RGB"))
    path = tmp_path / "cell.png"
    if kind == "RGBA":
        Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA").save(path)
    else:
        gray16 = (np.asarray(Image.open(WBC_EXAMPLE).convert("L"), np.uint16) * 257)
        Image.fromarray(gray16).save(path)
        with Image.open(path) as im:
            assert im.mode.startswith("I")
    label, _, _ = client.predict(handle_file(path), "wbc", api_name="/classify")
    assert sum(labels_of(label).values()) == pytest.approx(1.0, abs=1e-6)
    overlay = client.predict(handle_file(path), "wbc", 0.5, api_name="/explain")
    assert Image.open(overlay).size == (rgb.shape[1], rgb.shape[0])


def test_zstack_refuses_a_non_tiff_and_a_single_page(client, tmp_path):
    with pytest.raises(AppError, match="(?i)invalid file type"):
        client.predict(handle_file(WBC_EXAMPLE), api_name="/zstack_mesh")
    flat = tmp_path / "flat.tif"
    Image.open(WBC_EXAMPLE).convert("L").save(flat)
    with pytest.raises(AppError, match="stack"):
        client.predict(handle_file(flat), api_name="/zstack_mesh")


def test_unknown_model_is_an_error(client):
    with pytest.raises(AppError):
        client.predict(handle_file(WBC_EXAMPLE), "nope", api_name="/classify")


def test_server_paths_are_never_opened(url):
    """A request naming a file outside Gradio's upload folder is refused before any handler runs, with what to do."""
    import httpx

    secret = ROOT / "README.md"
    payload = {"data": [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}, "wbc"]}
    with httpx.Client(base_url=url, timeout=30) as http:
        event = http.post("/gradio_api/call/classify", json=payload)
        event.raise_for_status()
        stream = http.get(f"/gradio_api/call/classify/{event.json()['event_id']}").text
    assert "event: error" in stream
    error = json.loads(stream.split("event: error", 1)[1].split("data:", 1)[1].strip())["error"]
    assert error and "upload the file first" in error and "handle_file" in error, error


# --------------------------------------------------------------------------- the server log: one line per user error


def test_a_user_error_logs_one_line_and_no_traceback(client, tmp_path, caplog, capfd):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is a text file, not an image\n")
    capfd.readouterr()
    with caplog.at_level(logging.WARNING, logger="hematovision.app"):
        with pytest.raises(AppError, match="not a readable image"):
            client.predict(handle_file(bad), "wbc", api_name="/classify")
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, out + err
    records = [r for r in caplog.records if r.name == "hematovision.app"]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING and records[0].exc_info is None
    message = records[0].getMessage()
    assert "notes.jpg" in message and "not a readable image" in message and "\n" not in message


def test_a_bug_still_logs_its_traceback(app, client, tmp_path, monkeypatch, caplog):
    """Not every exception is the user's: an unexpected one keeps its traceback in the log, and the caller is told."""
    def broken(*args, **kwargs):
        raise RuntimeError("boom inside the classifier")

    monkeypatch.setattr(app.MODELS["wbc"], "predict", broken)
    cell = tmp_path / "cell.png"  # new content: not answered from the cache
    rgb = np.asarray(Image.open(WBC_EXAMPLE).convert("RGB")).copy()
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(cell)
    with caplog.at_level(logging.WARNING, logger="hematovision.app"):
        with pytest.raises(AppError, match="server log"):
            client.predict(handle_file(cell), "wbc", api_name="/classify")
    bugs = [r for r in caplog.records if r.name == "hematovision.app" and r.levelno == logging.ERROR]
    assert len(bugs) == 1 and bugs[0].exc_info and "boom inside the classifier" in caplog.text


def test_a_multi_page_tiff_points_to_the_3d_tab(client, tmp_path):
    """The core's hint names the CLI; a web user is pointed to the page's own z-stack input."""
    pages = [Image.open(WBC_EXAMPLE).convert("RGB"), Image.open(WBC_EXAMPLE).convert("RGB").rotate(90)]
    stack = tmp_path / "stack.tif"
    pages[0].save(stack, save_all=True, append_images=pages[1:])
    with pytest.raises(AppError) as info:
        client.predict(handle_file(stack), "wbc", api_name="/classify")
    message = str(info.value)
    assert "frames" in message and "3D tab" in message and "python -m hematovision" not in message


# --------------------------------------------------------------------------- memory and time for large uploads


def _large_image(folder: Path, seed: int, size=(7300, 5470)) -> Path:
    """A 40 MP JPEG of the example cell (upscaled), made unique by ``seed``."""
    import cv2

    rgb = cv2.resize(np.asarray(Image.open(WBC_EXAMPLE).convert("RGB")), size, interpolation=cv2.INTER_LINEAR)
    rgb[seed, :16] = 0
    path = folder / f"large-{seed}.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


@pytest.fixture
def as_upload(app):
    """Copy a file into Gradio's upload folder (removed afterwards); returns the FileData dict a handler receives."""
    import shutil
    import uuid

    folders = []

    def copy(path: Path) -> dict:
        folders.append(app.UPLOAD_DIR / f"test-{uuid.uuid4().hex}")
        folders[-1].mkdir(parents=True)
        return {"path": str(shutil.copy(path, folders[-1] / path.name))}

    yield copy
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def test_result_cache_is_bounded_by_bytes(app):
    cache = app.ResultCache(limit_bytes=10_000)
    for key in range(6):
        cache.get_or_compute(key, lambda: _Sized(3_000))
        assert cache.nbytes <= 10_000
    assert len(cache) == 3
    assert cache.get_or_compute(5, lambda: pytest.fail("a cached key is computed again")).nbytes == 3_000
    cache.get_or_compute(2, lambda: _Sized(3_000))  # evicted long ago: computed again, the oldest goes
    assert len(cache) == 3 and cache.nbytes == 9_000


class _Sized:
    """A cache entry of a given size."""

    def __init__(self, nbytes):
        self.nbytes = nbytes


def test_large_uploads_leave_a_compact_bounded_cache(app, tmp_path, monkeypatch, as_upload):
    """Several 40 MP uploads: the cache holds heatmaps and images at the analysis resolution, within its byte bound."""
    monkeypatch.setattr(app.PREDICTIONS, "limit_bytes", 12 * 2**20)  # room for two compact 40 MP analyses, not three
    app.PREDICTIONS.clear()
    for seed in range(3):
        upload = as_upload(_large_image(tmp_path, seed))
        _, _, result = app.classify(upload, "wbc")
        assert result["label"] in app.MODELS["wbc"].labels
        assert app.PREDICTIONS.nbytes <= 12 * 2**20
    assert len(app.PREDICTIONS) == 2
    for entry in app.PREDICTIONS._items.values():
        assert max(entry.image.shape[:2]) == app.ANALYSIS_SIDE and entry.prediction.cam.shape == entry.image.shape[:2]
        assert entry.nbytes < 6 * 2**20  # the full-resolution heatmap alone would be 160 MB
    app.PREDICTIONS.clear()
    assert app.CACHE_BYTES <= 64 * 2**20


def test_overlay_equals_the_core_overlay(app):
    from hematovision import cam as cams

    rgb = np.asarray(Image.open(WBC_EXAMPLE).convert("RGB"))
    cam = app.MODELS["wbc"].predict(rgb).cam
    for alpha in (0.0, 0.45, 1.0):
        ours = app.draw_overlay(rgb, app.downscale(cam), alpha)
        assert ours.shape == rgb.shape and ours.dtype == np.uint8
        assert np.abs(ours.astype(int) - cams.overlay(rgb, cam, alpha=alpha).astype(int)).max() <= 4


def test_a_40_mp_image_does_not_hold_a_queue_slot(app, client, tmp_path):
    """/mesh and /morphology analyse a downscaled copy: a 40 MP upload answers in seconds, not half a minute."""
    large = handle_file(_large_image(tmp_path, 7))
    start = time.perf_counter()
    path = client.predict(large, "wbc", "cam", api_name="/mesh")  # cold: includes classifying the 40 MP image
    mesh_s = time.perf_counter() - start
    load_glb(path)
    start = time.perf_counter()
    table, _, summary = client.predict(large, "wbc", api_name="/morphology")
    morphology_s = time.perf_counter() - start
    print(f"40 MP: /mesh {mesh_s:.1f} s (cold), /morphology {morphology_s:.1f} s")
    assert rows_of(table) and "normal" in summary
    assert mesh_s < 20 and morphology_s < 10, (mesh_s, morphology_s)


# --------------------------------------------------------------------------- agents: the MCP server


def test_mcp_server_lists_the_tools_and_classifies(tmp_path):
    """`python app.py --mcp`: an agent lists the tools (research-use limits in their descriptions), classifies an
    example and gets the core's message for a file that is not an image."""
    import asyncio
    import base64

    pytest.importorskip("mcp", reason="the MCP test needs gradio[mcp] (requirements.txt)")
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    def data_uri(data: bytes, mime: str) -> str:
        return f"data:{mime};base64,{base64.b64encode(data).decode()}"

    async def session(url):
        async with streamablehttp_client(f"{url}gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as s:
                await s.initialize()
                tools = {t.name: t for t in (await s.list_tools()).tools}
                good = await s.call_tool("classify", {"image": data_uri(WBC_EXAMPLE.read_bytes(), "image/jpeg"),
                                                      "model_name": "wbc"})
                bad = await s.call_tool("classify", {"image": data_uri(b"not an image\n" * 10, "image/jpeg"),
                                                     "model_name": "wbc"})
                return tools, good, bad

    with app_process("--mcp") as (url, lines):
        assert any("gradio_api/mcp" in line for line in lines), "".join(lines)
        tools, good, bad = asyncio.run(asyncio.wait_for(session(url), 120))
    assert {"classify", "explain", "cell_mesh", "measure", "zstack_mesh", "batch", "model_card"} <= set(tools)
    for name in ("classify", "explain", "cell_mesh", "measure", "batch"):
        assert "not a diagnostic device" in tools[name].description, (name, tools[name].description)
    image = tools["classify"].inputSchema["properties"]["image"]
    assert "blood-cell image" in image["description"]
    # The model choices are the models folder's (issue 14): the product models first, then any other model there.
    enum = tools["classify"].inputSchema["properties"]["model_name"]["enum"]
    assert enum[:2] == ["wbc", "all"] and enum == import_app().STORE.names()
    assert not good.isError, good.content
    assert "neutrophil" in good.content[0].text and "confidence" in good.content[0].text
    assert bad.isError and "not a readable image" in bad.content[0].text, bad.content


# --------------------------------------------------------------------------- python app.py


def test_python_app_py_serves_quickly_with_analytics_off():
    """`python app.py` as a Space runs it, GRADIO_ANALYTICS_ENABLED unset: it serves, and Gradio's telemetry is off."""
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    with app_process(env=env) as (url, lines):
        import httpx

        assert httpx.get(url, timeout=30).status_code == 200
        seconds = float(next(m for line in lines if (m := re.search(r"ready in ([\d.]+) s", line))).group(1))
        assert seconds < 20, f"start-up took {seconds} s"
        assert httpx.get(f"{url}config", timeout=30).json()["analytics_enabled"] is False
