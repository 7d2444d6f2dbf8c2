"""The web app (app.py) through its public API: gradio_client against the app served in-process.

Uses the shipped models (models/wbc.json, models/all.json, or $HEMATOVISION_MODELS)
and the real example images; skips with a reason when the models are not there.
"""

import contextlib
import csv
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import EXAMPLES, ROOT, require_data

pytest.importorskip("gradio", reason="the app needs gradio (requirements.txt)")
gradio_client = pytest.importorskip("gradio_client", reason="the API tests need gradio_client (requirements.txt)")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

ENDPOINTS = ("/classify", "/explain", "/mesh", "/zstack_mesh", "/morphology", "/batch", "/model_card")
WBC_EXAMPLE = EXAMPLES / "wbc" / "neutrophil__BNE_107370.jpg"
ALL_EXAMPLE = EXAMPLES / "all" / "pro_b__WBC-Malignant-Pro-013.jpg"


def models_dir() -> Path:
    return Path(os.environ.get("HEMATOVISION_MODELS", ROOT / "models"))


def import_app():
    """Import app.py (it loads the models once); skip when the shipped models are not there."""
    missing = [n for n in ("wbc", "all") if not (models_dir() / f"{n}.json").exists()]
    if missing:
        pytest.skip(f"{', '.join(f'{n}.json' for n in missing)} not in {models_dir()}: the app tests need the shipped models")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import app

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(app):
    """The app launched in-process on a free local port, as `python app.py` launches it; yields its URL."""
    app.demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **app.LAUNCH_KWARGS)
    try:
        yield app.demo.local_url
    finally:
        app.demo.close()


@pytest.fixture(scope="module")
def app():
    return import_app()


@pytest.fixture(scope="module")
def url(app):
    with serve(app) as url:
        yield url


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
    assert app.demo._queue.default_concurrency_limit == 2
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
    assert all(r["label"] in app.MODELS["wbc"].labels and 0 < r["confidence"] <= 1 for r in rows[:-1])
    assert rows[-1]["label"] is None and "notes.jpg" in rows[-1]["error"] and str(tmp_path) not in rows[-1]["error"]
    counts = rows_of(diff)
    assert [r["class"] for r in counts] == list(app.MODELS["wbc"].labels)
    assert sum(r["count"] for r in counts) == 6
    assert sum(r["percent"] for r in counts) == pytest.approx(100.0, abs=0.5)
    with open(csv_path, newline="", encoding="utf-8") as fh:
        parsed = list(csv.DictReader(fh))
    assert [r["file"] for r in parsed] == [f.name for f in files]
    assert "6** of 7 files classified" in summary


def test_model_card(client):
    for model in ("wbc", "all"):
        card = client.predict(model, api_name="/model_card")
        assert len(card) > 100 and "<script" not in card.lower()


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
    """A request naming a file outside Gradio's upload folder is refused before any handler runs."""
    import httpx

    secret = ROOT / "README.md"
    payload = {"data": [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}, "wbc"]}
    with httpx.Client(base_url=url, timeout=30) as http:
        event = http.post("/gradio_api/call/classify", json=payload)
        event.raise_for_status()
        stream = http.get(f"/gradio_api/call/classify/{event.json()['event_id']}").text
    assert "event: error" in stream and "HematoVision" not in stream.split("event: error", 1)[1]


# --------------------------------------------------------------------------- python app.py


@pytest.mark.slow
def test_python_app_py_serves_quickly():
    import_app()  # skips without the models
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines, deadline = [], time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if m := re.search(r"ready in ([\d.]+) s at (\S+)", line):
                break
        else:
            m = None
        assert m, "app.py did not print its start-up time:\n" + "".join(lines)
        assert f":{port}" in m.group(2)
        import httpx

        assert httpx.get(m.group(2), timeout=30).status_code == 200
        assert float(m.group(1)) < 20, f"start-up took {m.group(1)} s"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
