"""Hostile and broken inputs through every front door: the public API, the CLI and the app's /classify.

Every case is generated here (nothing downloaded). For each: a clear error of
the right class (API), a one-line JSON error and no traceback (CLI), a
``gr.Error`` with the core's message (app); never a hang, and the same
classifier / process / server classifies the next good image. 16-bit,
RGBA, grayscale and CMYK images are SUPPORTED: their right outcome is a valid
prediction. ``tests/test_images.py`` covers ``load_image`` itself; this file
covers what a user reaches.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
from PIL import Image

import hematovision as hv
from hematovision import (HematoVisionError, ImageNotFoundError, ImageTooLargeError, InvalidImageError, ModelFormatError,
                          ModelIntegrityError, ModelNotFoundError)
from tests.conftest import EXAMPLES, ROOT

#: Seconds any single request may take before it counts as a hang.
DEADLINE_S = 60
CELL = sorted((EXAMPLES / "wbc").glob("*.jpg"))[0]


# --------------------------------------------------------------------------- the corpus


def _cell_rgb() -> np.ndarray:
    return np.asarray(Image.open(CELL).convert("RGB"))


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _zero_byte(d: Path) -> Path:
    return _write(d, "zero-byte.jpg", b"")


def _truncated_jpeg(d: Path) -> Path:
    data = CELL.read_bytes()
    return _write(d, "truncated.jpg", data[: len(data) // 3])


def _truncated_png(d: Path) -> Path:
    data = _encoded(Image.fromarray(_cell_rgb()), "PNG")
    return _write(d, "truncated.png", data[: len(data) // 3])


def _text_named_jpg(d: Path) -> Path:
    return _write(d, "notes.jpg", b"Patient list, do not share.\n" * 20)


def _bomb(d: Path) -> Path:
    # 30,000 x 30,000 one-bit PNG: about 100 KB on disk, 900 MP once decoded.
    path = d / "bomb.png"
    Image.new("1", (30000, 30000)).save(path, optimize=True)
    assert path.stat().st_size < 2_000_000
    return path


def _one_pixel(d: Path) -> Path:
    return _write(d, "one-pixel.png", _encoded(Image.new("RGB", (1, 1), (200, 30, 60)), "PNG"))


def _tiff16(d: Path) -> Path:
    grey = np.asarray(Image.fromarray(_cell_rgb()).convert("L")).astype(np.uint16) * 257
    path = d / "grey16.tif"
    Image.fromarray(grey).save(path)  # mode I;16
    assert Image.open(path).mode == "I;16"
    return path


def _rgb16_png(d: Path) -> Path:
    path = d / "rgb48.png"
    cv2.imwrite(str(path), cv2.cvtColor(_cell_rgb(), cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    return path


def _rgba(d: Path) -> Path:
    rgba = np.dstack([_cell_rgb(), np.full(_cell_rgb().shape[:2], 255, np.uint8)])
    rgba[:10, :, 3] = 0  # a transparent band
    return _write(d, "rgba.png", _encoded(Image.fromarray(rgba, "RGBA"), "PNG"))


def _grey(d: Path) -> Path:
    return _write(d, "grey.png", _encoded(Image.fromarray(_cell_rgb()).convert("L"), "PNG"))


def _cmyk(d: Path) -> Path:
    data = _encoded(Image.fromarray(_cell_rgb()).convert("CMYK"), "JPEG", quality=92)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    return _write(d, "cmyk.jpg", data)


def _animated_gif(d: Path) -> Path:
    frames = [Image.fromarray(_cell_rgb()), Image.fromarray(255 - _cell_rgb())]
    path = d / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def _multipage_tiff(d: Path) -> Path:
    pages = [Image.fromarray(_cell_rgb()), Image.fromarray(_cell_rgb()[::-1])]
    path = d / "stack.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def _float_tiff(value: float, name: str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        arr = np.full((64, 64), 0.5, np.float32)
        arr[10:20, 10:20] = value
        path = d / name
        Image.fromarray(arr).save(path)  # mode F
        return path

    return make


def _missing(d: Path) -> Path:
    return d / "does-not-exist.png"


def _directory(d: Path) -> Path:
    path = d / "a-folder.png"
    path.mkdir(exist_ok=True)
    return path


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], Path]
    error: type[Exception] | None  # None: a supported input, the outcome must be a valid prediction
    message: str = ""  # in the error message, wherever it is shown
    app: bool = True  # can be uploaded to the app (a missing path or a folder cannot)
    cli: bool = True


CASES = [
    Case("zero-byte file", _zero_byte, InvalidImageError, "empty"),
    Case("truncated JPEG", _truncated_jpeg, InvalidImageError, "corrupt or truncated"),
    Case("truncated PNG", _truncated_png, InvalidImageError, "corrupt or truncated"),
    Case("text file named .jpg", _text_named_jpg, InvalidImageError, "not a readable image"),
    Case("decompression bomb 30000x30000 PNG", _bomb, ImageTooLargeError, "exceeds the budget"),
    Case("1x1 image", _one_pixel, InvalidImageError, "too small"),
    Case("16-bit greyscale TIFF", _tiff16, None),
    Case("16-bit RGB PNG", _rgb16_png, None),
    Case("RGBA PNG", _rgba, None),
    Case("greyscale PNG", _grey, None),
    Case("CMYK JPEG", _cmyk, None),
    Case("animated GIF", _animated_gif, InvalidImageError, "frames"),
    Case("multi-page TIFF to the 2D path", _multipage_tiff, InvalidImageError, "frames"),
    Case("float TIFF with NaN", _float_tiff(np.nan, "nan.tif"), InvalidImageError, "NaN or infinite"),
    Case("float TIFF with inf", _float_tiff(np.inf, "inf.tif"), InvalidImageError, "NaN or infinite"),
    Case("path that does not exist", _missing, ImageNotFoundError, "no such file", app=False),
    # The CLI expands a folder into the images inside it (documented), so a folder is an API case only.
    Case("directory", _directory, InvalidImageError, "directory", app=False, cli=False),
]
ARRAYS = {
    "NaN float array": np.full((64, 64, 3), np.nan, np.float32),
    "inf float array": np.full((64, 64, 3), np.inf, np.float64),
    "-inf in a float array": np.where(np.eye(64, dtype=bool)[..., None], -np.inf, 0.5).repeat(3, axis=2).astype(np.float32),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    return {case.name: case.make(folder) for case in CASES}


def within_deadline(fn, *args, seconds: float = DEADLINE_S, **kwargs):
    """Run ``fn`` in a daemon thread; fail (not hang, not block the exit) when it takes longer than ``seconds``."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} did not return within {seconds} s (hang)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def assert_valid(pred: hv.Prediction, labels, shape) -> None:
    assert pred.label in labels and 0.0 <= pred.confidence <= 1.0
    assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert pred.cam is not None and pred.cam.shape == shape[:2] and np.isfinite(pred.cam).all()


# --------------------------------------------------------------------------- public API


@pytest.fixture(scope="module")
def clf(tiny_models):
    return hv.load_model(tiny_models["tiny-int8"])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_api(case, corpus, clf):
    path = corpus[case.name]
    if case.error is None:
        pred = within_deadline(clf.predict, path)
        assert_valid(pred, clf.labels, hv.load_image(path).shape)
    else:
        with pytest.raises(case.error, match=case.message) as info:
            within_deadline(clf.predict, path)
        assert isinstance(info.value, HematoVisionError)
        assert "\n" not in str(info.value).strip()
    # The same classifier serves the next request.
    assert_valid(within_deadline(clf.predict, CELL), clf.labels, hv.load_image(CELL).shape)


@pytest.mark.parametrize("name", list(ARRAYS))
def test_api_nan_inf_arrays(name, clf):
    with pytest.raises(InvalidImageError, match="NaN or infinite"):
        within_deadline(clf.predict, ARRAYS[name])
    assert within_deadline(clf.predict, CELL).label in clf.labels


def test_api_bytes_of_every_case(corpus, clf):
    """The same files handed over as bytes (an upload in memory) fail or succeed the same way."""
    for case in CASES:
        path = corpus[case.name]
        if not path.is_file() or path.stat().st_size == 0:
            continue
        if case.error is None:
            assert clf.predict(path.read_bytes()).label in clf.labels, case.name
        else:
            with pytest.raises(InvalidImageError):
                within_deadline(clf.predict, path.read_bytes())


# --------------------------------------------------------------------------- model faults


def _copy_model(src_json: Path, dest: Path, *, tflite_bytes: bytes | None = None, fix_sha: bool = False) -> Path:
    """Copy a model (json, tflite, head) into ``dest``, optionally replacing the .tflite bytes."""
    spec = json.loads(src_json.read_text())
    dest.mkdir(parents=True, exist_ok=True)
    data = tflite_bytes if tflite_bytes is not None else (src_json.parent / spec["file"]).read_bytes()
    (dest / spec["file"]).write_bytes(data)
    shutil.copy(src_json.parent / spec["cam"]["head_file"], dest / spec["cam"]["head_file"])
    if fix_sha:
        spec["sha256"] = hashlib.sha256(data).hexdigest()
    out = dest / src_json.name
    out.write_text(json.dumps(spec))
    return out


@pytest.fixture(scope="module")
def bad_models(tiny_models, tmp_path_factory) -> dict[str, tuple[Path, type[Exception], str]]:
    root = tmp_path_factory.mktemp("bad-models")
    src = Path(tiny_models["tiny-int8"])
    good = (src.parent / json.loads(src.read_text())["file"]).read_bytes()
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    lone = root / "lone" / "lonely.tflite"
    lone.parent.mkdir()
    lone.write_bytes(good)
    return {
        # sha256 fixed up, so the file reaches the runtime: refused for what it is.
        "text saved as .tflite": (_copy_model(src, root / "text", tflite_bytes=b"not a model\n" * 100, fix_sha=True),
                                  ModelFormatError, "not a TFLite model"),
        "TFL3 header, garbage body": (_copy_model(src, root / "garbage", fix_sha=True,
                                                  tflite_bytes=b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 16),
                                      ModelFormatError, "could not load"),
        "truncated .tflite": (_copy_model(src, root / "truncated", tflite_bytes=good[: len(good) // 2], fix_sha=True),
                              ModelFormatError, "could not load"),
        # sha256 recorded in the JSON no longer matches.
        "one flipped byte, sha256 mismatch": (_copy_model(src, root / "flipped", tflite_bytes=bytes(flipped)),
                                              ModelIntegrityError, "does not match"),
        "empty .tflite, sha256 mismatch": (_copy_model(src, root / "empty", tflite_bytes=b""), ModelIntegrityError, "does not match"),
        ".tflite without its JSON": (lone, ModelNotFoundError, "JSON is missing"),
        "model path that does not exist": (root / "nope" / "wbc.json", ModelNotFoundError, "no such model file"),
    }


BAD_MODEL_NAMES = ["text saved as .tflite", "TFL3 header, garbage body", "truncated .tflite", "one flipped byte, sha256 mismatch",
                   "empty .tflite, sha256 mismatch", ".tflite without its JSON", "model path that does not exist"]


@pytest.mark.parametrize("name", BAD_MODEL_NAMES)
def test_api_bad_model(name, bad_models):
    path, error, message = bad_models[name]
    with pytest.raises(error, match=message):
        within_deadline(hv.load_model, path)


@pytest.mark.parametrize("name", ["text saved as .tflite", "one flipped byte, sha256 mismatch", ".tflite without its JSON"])
def test_cli_bad_model(name, bad_models, tmp_path):
    path, _, message = bad_models[name]
    img = tmp_path / "cell.jpg"
    shutil.copy(CELL, img)
    r = cli("classify", "--model", path, img)
    assert r.returncode == 1 and r.stdout == ""
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- CLI


def cli(*args, timeout=DEADLINE_S * 3):
    try:
        return subprocess.run([sys.executable, "-m", "hematovision", *map(str, args)], capture_output=True, text=True,
                              cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the CLI did not finish within {timeout} s (hang) on {args}")


def test_cli_every_case_then_a_good_image(corpus, tiny_models, tmp_path):
    """One run: each case followed by a good image, so the run must go on after every failure."""
    good = tmp_path / "good.jpg"
    shutil.copy(CELL, good)
    cases = [c for c in CASES if c.cli]
    args = [a for c in cases for a in (corpus[c.name], good)]
    r = cli("classify", "--model", tiny_models["tiny-int8"], *args)
    assert r.returncode == 1  # some inputs failed
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 2 * len(cases)
    for case, row, after in zip(cases, rows[::2], rows[1::2]):
        assert row["path"] == str(corpus[case.name])
        if case.error is None:
            assert "error" not in row, f"{case.name}: {row.get('error')}"
            assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        else:
            assert case.message in row.get("error", ""), f"{case.name}: {row}"
            assert "\n" not in row["error"]
        assert "label" in after, f"the run did not go on after {case.name}: {after}"


def test_cli_folder_without_images(tiny_models, tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("classify", "--model", tiny_models["tiny-int8"], tmp_path / "empty")
    # Issue 16: an empty folder is its own error row (not silence) and exit 1.
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(rows) == 1 and "folder is empty" in rows[0]["error"]


def test_cli_folder_with_the_corpus_and_cam_dir(corpus, tiny_models, tmp_path):
    """A folder holding the whole corpus (the way a user points the CLI at a slide export) with overlays on."""
    folder = tmp_path / "export"
    folder.mkdir()
    for case in CASES:
        src = corpus[case.name]
        if src.is_file():
            shutil.copy(src, folder / src.name)
    r = cli("classify", "--model", tiny_models["tiny-int8"], "--cam-dir", tmp_path / "cams", folder)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    rows = {Path(row["path"]).name: row for row in map(json.loads, r.stdout.splitlines())}
    for case in CASES:
        src = corpus[case.name]
        if src.is_file():
            assert ("error" in rows[src.name]) == (case.error is not None), (case.name, rows[src.name])
    assert len(list((tmp_path / "cams").glob("*.png"))) == sum(c.error is None for c in CASES)


# --------------------------------------------------------------------------- the app's /classify


def _app_models_present() -> bool:
    folder = Path(os.environ.get("HEMATOVISION_MODELS", ROOT / "models"))
    return all((folder / f"{name}.json").exists() for name in ("wbc", "all"))


@pytest.fixture(scope="module")
def app_url():
    if not (ROOT / "app.py").exists():
        pytest.skip("app.py does not exist yet")
    if not _app_models_present():
        pytest.skip("the app's models (models/wbc.json, models/all.json) are not shipped yet")
    pytest.importorskip("gradio_client")
    import app

    from tests.conftest import serve

    # As `python app.py` launches it (the production upload limit and the app's upload middleware), and the
    # same in-process server the session's other API tests use: one Blocks object can be served only once.
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def app_client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False, download_files=False, analytics_enabled=False)


def app_call(client, path: Path, api: str = "/classify"):
    from gradio_client import handle_file

    job = client.submit(handle_file(str(path)), "wbc", api_name=api)
    try:
        return job.result(timeout=DEADLINE_S)
    except FutureTimeout:
        pytest.fail(f"{api} did not answer within {DEADLINE_S} s (hang) for {path.name}")


def app_classify(client, path: Path):
    return app_call(client, path, "/classify")


def fresh_cell(folder: Path) -> Path:
    """The example cell with one random pixel changed: new content, so the app cannot answer from its cache."""
    rgb = _cell_rgb().copy()
    rng = np.random.default_rng()
    rgb[rng.integers(rgb.shape[0]), rng.integers(rgb.shape[1])] = rng.integers(0, 256, 3)
    path = folder / f"cell-{uuid.uuid4().hex[:8]}.png"
    Image.fromarray(rgb).save(path)
    return path


@pytest.mark.parametrize("case", [c for c in CASES if c.app], ids=lambda c: c.name)
def test_app(case, corpus, app_client, tmp_path):
    from gradio_client.exceptions import AppError

    path = corpus[case.name]
    if case.error is None:
        confidences, verdict, result = app_classify(app_client, path)
        assert result["label"] == confidences["label"] and 0.0 <= result["confidence"] <= 1.0
    else:
        with pytest.raises(AppError) as info:
            app_classify(app_client, path)
        message = str(info.value)
        assert case.message in message, message
        assert "Traceback" not in message and 'File "' not in message
    # The server classifies the next upload (a new image, so a real inference, not a cached answer).
    assert "label" in app_classify(app_client, fresh_cell(tmp_path))[2]


BROKEN_FOR_EVERY_ENDPOINT = ["zero-byte file", "truncated PNG", "text file named .jpg", "decompression bomb 30000x30000 PNG",
                             "animated GIF", "float TIFF with NaN"]


@pytest.mark.parametrize("api", ["/explain", "/morphology", "/mesh"])
def test_app_other_image_endpoints_refuse_broken_files(api, corpus, app_client, tmp_path):
    """The endpoints chained after /classify are public too; broken files get the same clear refusal."""
    from gradio_client.exceptions import AppError

    for name in BROKEN_FOR_EVERY_ENDPOINT:
        with pytest.raises(AppError) as info:
            app_call(app_client, corpus[name], api)
        message = str(info.value)
        assert message.strip() and "Traceback" not in message and 'File "' not in message, (name, message)
    assert "label" in app_classify(app_client, fresh_cell(tmp_path))[2]


def test_app_refuses_an_oversized_upload_and_keeps_serving(app_client, app_url, tmp_path):
    """A byte bomb (far larger than any cell image) is refused at the upload, before the core sees it."""
    import app
    import httpx

    limit = getattr(app, "MAX_FILE_SIZE", None)
    if limit is None:
        pytest.skip("the app sets no upload size limit")
    big = tmp_path / "huge.png"
    with open(big, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(os.urandom(1 << 20) * 64)  # 64 MiB
    with open(big, "rb") as fh:
        r = httpx.post(f"{app_url}gradio_api/upload", files=[("files", ("huge.png", fh, "image/png"))], timeout=DEADLINE_S)
    assert r.status_code in (400, 413), r.text[:300]
    assert "Traceback" not in r.text
    assert "label" in app_classify(app_client, fresh_cell(tmp_path))[2]


# --------------------------------------------------------------------------- where the app reads and writes


def _call_raw(url: str, api: str, data: list) -> tuple[str, str]:
    """POST /gradio_api/call/<api> with raw JSON (what a hand-made client can send); return (event, data)."""
    import httpx

    r = httpx.post(f"{url}gradio_api/call/{api}", json={"data": data}, timeout=DEADLINE_S)
    if r.status_code != 200:
        return "rejected", r.text
    r = httpx.get(f"{url}gradio_api/call/{api}/{r.json()['event_id']}", timeout=DEADLINE_S)
    events = [line.split(":", 1)[1].strip() for line in r.text.splitlines() if line.startswith("event:")]
    datas = [line.split(":", 1)[1].strip() for line in r.text.splitlines() if line.startswith("data:")]
    return (events[-1] if events else "none"), (datas[-1] if datas else "")


def _snapshot(*folders: Path) -> dict[str, int]:
    out = {}
    for folder in folders:
        if folder.is_dir():
            for p in folder.rglob("*"):
                if p.is_file():
                    out[str(p)] = p.stat().st_mtime_ns
    return out


@pytest.fixture
def outside_image(tmp_path) -> Path:
    """A real cell image on the server, outside Gradio's upload folder: no request may reach it."""
    secret = tmp_path / "server-side" / "private-cell.jpg"
    secret.parent.mkdir()
    shutil.copy(CELL, secret)
    return secret


#: Every public endpoint that takes a file, with the rest of its arguments.
FILE_ENDPOINTS = {
    "classify": lambda f: [f, "wbc"],
    "explain": lambda f: [f, "wbc", 0.45],
    "morphology": lambda f: [f, "wbc"],
    "mesh": lambda f: [f, "wbc", "image"],
    "batch": lambda f: [[f], "wbc"],
    "zstack_mesh": lambda f: [f],
}


@pytest.mark.parametrize("api", list(FILE_ENDPOINTS))
@pytest.mark.parametrize("form", ["FileData with meta", "dict without meta", "bare string"])
def test_app_never_opens_a_path_the_user_supplies(api, form, app_url, outside_image):
    value = {"FileData with meta": {"path": str(outside_image), "meta": {"_type": "gradio.FileData"}},
             "dict without meta": {"path": str(outside_image)},
             "bare string": str(outside_image)}[form]
    event, payload = _call_raw(app_url, api, FILE_ENDPOINTS[api](value))
    # Refused before the handler runs (Gradio) or by the handler; /batch would even report an unreadable file as a row.
    assert event != "complete", (
        f"/{api} processed {outside_image}, a server file the user named but never uploaded ({form}): {payload[:300]}")
    assert str(outside_image.parent) not in payload  # no server path echoed back
    # ... and the refusal says what to do instead (not Gradio's bare {"error": null}).
    assert event == "error", payload[:300]
    error = json.loads(payload)["error"]
    assert error and "upload" in error.lower() and "handle_file" in error, f"/{api} ({form}) refused without saying why: {payload[:300]}"


@pytest.mark.parametrize("disposition", ['form-data; name="files"', 'form-data; name="files"; filename=""'])
def test_app_upload_without_a_file_name_is_a_client_error(app_url, app_client, tmp_path, disposition):
    """A multipart upload whose file part has no (or an empty) file name: never a 500; a 4xx says what to send."""
    import httpx

    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: image/jpeg\r\n\r\n").encode() \
        + CELL.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    r = httpx.post(f"{app_url}gradio_api/upload", content=body, timeout=DEADLINE_S,
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert "file name" in r.text and "Traceback" not in r.text, r.text[:300]
    else:  # stored under a name Gradio makes up, inside its upload folder
        from gradio import utils as gutils

        assert all(Path(p).resolve().is_relative_to(Path(gutils.get_upload_folder()).resolve()) for p in r.json())
    assert "label" in app_classify(app_client, fresh_cell(tmp_path))[2]


def test_app_upload_with_a_crafted_filename_stays_in_the_upload_folder(app_url, tmp_path, monkeypatch):
    import httpx
    from gradio import utils as gutils

    monkeypatch.chdir(tmp_path)
    upload_root = Path(gutils.get_upload_folder()).resolve()
    marker = f"escape-{uuid.uuid4().hex}"
    names = [f"../../../../{marker}-a.png", f"/tmp/{marker}-b.png", f"..\\..\\{marker}-c.png", f"{marker}-d.png\x00.txt",
             f"....//....//{marker}-e.png"]
    before = _snapshot(tmp_path)
    for name in names:
        with open(CELL, "rb") as fh:
            r = httpx.post(f"{app_url}gradio_api/upload", files=[("files", (name, fh, "image/jpeg"))], timeout=DEADLINE_S)
        if r.status_code != 200:
            continue  # refused outright: nothing was written
        for stored in r.json():
            stored = Path(stored).resolve()
            assert stored.is_relative_to(upload_root), f"upload named {name!r} was stored at {stored}"
            # The stored upload is usable, and classifying it writes nothing outside the upload folder.
            event, payload = _call_raw(app_url, "classify", [{"path": str(stored), "meta": {"_type": "gradio.FileData"}}, "wbc"])
            assert event == "complete", payload[:300]
    # Where a traversal would land: the upload folder's ancestors, the working directory, the checkout, /tmp.
    places = [*upload_root.parents, tmp_path, ROOT, ROOT / "models", Path("/tmp")]
    escaped = [p for place in places for p in place.glob(f"{marker}*")]
    assert not escaped, f"files named by the client were written outside the upload folder: {escaped}"
    assert _snapshot(tmp_path) == before  # the working directory is untouched


# --------------------------------------------------------------------------- the station's writes


def test_station_writes_only_under_its_configured_folders(corpus, tiny_models, tmp_path, monkeypatch):
    """A watched folder holding the hostile corpus, a good field and a model whose labels look like paths."""
    from hematovision.station.sources import FolderSource
    from hematovision.station.loop import Station, StationConfig
    from tests.test_field import synthetic_field

    monkeypatch.chdir(tmp_path)
    inbox, out, crops = tmp_path / "inbox", tmp_path / "out", tmp_path / "crops"
    inbox.mkdir()
    for case in CASES:
        src = corpus[case.name]
        if src.is_file():
            shutil.copy(src, inbox / src.name)
    for seed in range(2):
        Image.fromarray(synthetic_field(seed=seed, n_white=2)[0]).save(inbox / f"field-{seed}.png")
    # Labels that would escape the crops folder if used as file names.
    src = Path(tiny_models["tiny-int8"])
    evil = _copy_model(src, tmp_path / "evil-model")
    spec = json.loads(evil.read_text())
    spec["labels"] = ["../../../escaped", "/tmp/absolute", "..\\back"]
    evil.write_text(json.dumps(spec))
    clf = hv.load_model(evil)
    inbox_before = _snapshot(inbox)
    config = StationConfig(db_path=out / "station.sqlite", crops_dir=crops, summary_every=0)
    deadline = time.monotonic() + 30
    with FolderSource(inbox, watch=False, settle=0.0) as source:
        summary = Station(clf, config, printer=lambda s: None).run(
            source, should_stop=lambda: "deadline" if time.monotonic() > deadline else None)
        skipped, suffixes = dict(source.skipped), source.suffixes
    assert summary.stop_reason == "source ended", (
        f"the station did not finish a non-watched folder of {len(list(inbox.iterdir()))} files within 30 s "
        f"(stop reason {summary.stop_reason!r}; skipped {sorted(skipped)})")
    assert summary.cells > 0
    bad = {corpus[c.name].name for c in CASES if c.error is not None and corpus[c.name].is_file()
           and corpus[c.name].suffix.lower() in suffixes}
    assert bad <= set(skipped), f"not reported as skipped: {sorted(bad - set(skipped))}"
    assert _snapshot(inbox) == inbox_before  # the inputs are read, never changed or moved
    written = set(_snapshot(tmp_path)) - set(inbox_before) - set(_snapshot(tmp_path / "evil-model"))
    assert written and all(Path(p).is_relative_to(out) or Path(p).is_relative_to(crops) for p in written), sorted(written)
    assert not list(Path("/tmp").glob("absolute*")) and not list(tmp_path.parent.glob("escaped*"))
