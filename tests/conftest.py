import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

# One Gradio temp folder per test process. Each xdist worker serves its own app, and Gradio names a cached file by
# its content's hash: two workers serving the same slide's crops share /tmp/gradio/<hash>/image.jpeg, and the app's
# delete_cache removes what a server cached when it shuts down - one worker finishing then took another's gallery
# images away mid-test (403 on the file URL). Set before anything imports gradio (hematovision/web/paths.py reads it).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
_OWN_GRADIO_TMP = None
if _WORKER or "GRADIO_TEMP_DIR" not in os.environ:
    _OWN_GRADIO_TMP = os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix=f"gradio-tests-{_WORKER or 'main'}-")


def pytest_unconfigure(config):
    """Remove this process's Gradio temp folder (xdist workers end without running atexit handlers)."""
    if _OWN_GRADIO_TMP:
        shutil.rmtree(_OWN_GRADIO_TMP, ignore_errors=True)
EXAMPLES = ROOT / "examples"


def data_dir() -> Path:
    """The shared data folder: $HEMATOVISION_DATA, else ../shared/data beside the checkout."""
    return Path(os.environ.get("HEMATOVISION_DATA", ROOT.parent / "shared" / "data"))


def copy_model(json_path: Path, dest: Path) -> Path:
    """Copy a model's files (<name>.json, .tflite, .head.npz, ...) into ``dest``; returns the copied JSON."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in json_path.parent.glob(json_path.stem + "*"):
        shutil.copy(f, dest / f.name)
    return dest / json_path.name


def require_data(*parts: str) -> Path:
    path = data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: this test needs the real datasets (set HEMATOVISION_DATA)")
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny TFLite test models (float32 and int8), built once per session with TensorFlow."""
    pytest.importorskip("tensorflow", reason="building test models needs TensorFlow (requirements-dev.txt)")
    from tests.tiny_model import build

    return build(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def disc():
    from tests.tiny_model import disc_image

    return lambda label, size=96, seed=0: disc_image(label, size=size, rng=np.random.default_rng(seed))


# --------------------------------------------------------------------------- the web app (test_app, test_review_tab, ...)


def models_dir() -> Path:
    return Path(os.environ.get("HEMATOVISION_MODELS", ROOT / "models"))


def import_app():
    """Import app.py (it loads the models once); skip when the shipped models are not there."""
    missing = [n for n in ("wbc", "all") if not (models_dir() / f"{n}.json").exists()]
    if missing:
        pytest.skip(f"{', '.join(f'{n}.json' for n in missing)} not in {models_dir()}: the app tests need the shipped models")
    pytest.importorskip("gradio", reason="the app needs gradio (requirements.txt)")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import app

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: id(demo) -> [its URL, how many ``serve`` blocks use it]: one in-process server however many fixtures ask.
_SERVING: dict[int, list] = {}


@contextlib.contextmanager
def serve(app):
    """The app launched in-process on a free local port, as `python app.py` launches it; yields its URL.

    Re-entrant: while it is served (the session's ``url``), another ``serve(app)`` (a module's own fixture) gets the
    same server, and the last one to leave closes it.
    """
    key = id(app.demo)
    if key not in _SERVING:
        app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
        _SERVING[key] = [app.demo.local_url, 0]
    _SERVING[key][1] += 1
    try:
        yield _SERVING[key][0]
    finally:
        _SERVING[key][1] -= 1
        if not _SERVING[key][1]:
            del _SERVING[key]
            app.demo.close()


@pytest.fixture(scope="session")
def app():
    """app.py, imported once (its models loaded once)."""
    return import_app()


@pytest.fixture(scope="session")
def url(app):
    """One in-process server of the app for the whole session: the API tests of every module share it."""
    with serve(app) as url:
        yield url


@contextlib.contextmanager
def app_process(*args: str, env: dict | None = None):
    """``python app.py ARGS`` on a free port; yields (url, output lines so far) once it prints that it is ready."""
    import_app()  # skips without the models
    port = free_port()
    env = dict(os.environ if env is None else env, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port))
    proc = subprocess.Popen([sys.executable, "app.py", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines, deadline, ready = [], time.monotonic() + 90, None
        while time.monotonic() < deadline and ready is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            ready = re.search(r"ready in ([\d.]+) s at (\S+)", line)
        assert ready, "app.py did not print its start-up time:\n" + "".join(lines)
        assert f":{port}" in ready.group(2)
        # Keep reading, so that a chatty server never blocks on a full pipe.
        threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
        yield ready.group(2), lines
    finally:
        proc.terminate()
        proc.wait(timeout=30)
