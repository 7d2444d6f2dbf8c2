"""What a Hugging Face Space installs and how fast it starts: ``requirements.txt`` in a fresh venv.

    python bench/space_install.py                      # fresh venv in a temp dir, removed afterwards
    python bench/space_install.py --venv /tmp/space    # keep (or reuse) the venv there
    python bench/space_install.py --json out.json      # also write the numbers as JSON

Steps, each timed: ``python -m venv``; ``pip install -r requirements.txt`` (from the package index
pip is configured for; pip's own cache makes a second run faster); the venv's size on disk (``du``, the
whole venv: Python's own files in it, pip and every installed distribution) and its distributions
(``pip list``); then ``python app.py`` from the venv, with the shipped models of this checkout
(``HF_HUB_OFFLINE=1``: no download), until the page first answers HTTP 200 (``start_s``, wall clock from
the process start) and what the app itself printed ("HematoVision ready in N s"). On the first start a
smoke run calls every endpoint with the venv's own gradio_client (an example cell to /classify,
/explain, /mesh, /morphology, /batch and /model_card, a synthetic z-stack to /zstack_mesh), so the
numbers are those of an install that really serves the whole app. Stdlib only, so it runs with any
Python 3.10+; the venv uses the Python that runs this script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"
START_DEADLINE_S = 180
#: Run by the venv's Python against the started app: every endpoint once; prints one line per endpoint.
SMOKE = r"""
import sys, tempfile, numpy as np, tifffile
from gradio_client import Client, handle_file
url, cell, model = sys.argv[1], handle_file(sys.argv[2]), sys.argv[3]
c = Client(url, verbose=False)
z, y, x = np.mgrid[0:24, 0:48, 0:48]
stack = tempfile.mktemp(suffix=".tif")
tifffile.imwrite(stack, (255 * (((z - 12) / 8) ** 2 + ((y - 24) / 14) ** 2 + ((x - 24) / 14) ** 2 < 1)).astype(np.uint8))
_, _, result = c.predict(cell, model, api_name="/classify"); print("/classify", result["label"], round(result["confidence"], 3))
print("/explain", c.predict(cell, model, 0.45, api_name="/explain"))
print("/mesh", c.predict(cell, model, "cam", api_name="/mesh"))
print("/morphology", len(c.predict(cell, model, api_name="/morphology")[0]["data"]), "features")
print("/zstack_mesh", c.predict(handle_file(stack), api_name="/zstack_mesh"))
print("/batch", c.predict([cell], model, api_name="/batch")[4])
print("/model_card", len(c.predict(model, api_name="/model_card")), "characters")
"""
EXAMPLE = ROOT / "examples" / "wbc" / "neutrophil__BNE_107370.jpg"
#: The model the smoke run asks for (stdlib only here, so not read from hematovision.commands.DEFAULT_MODEL).
SMOKE_MODEL = "wbc"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _du_bytes(path: Path) -> int:
    """Bytes on disk (``du -sb``), falling back to the sum of file sizes."""
    try:
        return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def install(venv: Path, requirements: Path) -> dict:
    """Create ``venv`` (unless it exists) and install ``requirements`` into it; sizes and times."""
    out = {}
    start = time.perf_counter()
    if not _venv_python(venv).exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    out["venv_s"] = round(time.perf_counter() - start, 1)
    python = str(_venv_python(venv))
    start = time.perf_counter()
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(requirements)],
                   check=True, cwd=ROOT)
    out["pip_install_s"] = round(time.perf_counter() - start, 1)
    listed = json.loads(subprocess.run([python, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
                                       capture_output=True, text=True, check=True).stdout)
    out["distributions"] = len(listed)
    out["venv_bytes"] = _du_bytes(venv)
    out["venv_mib"] = round(out["venv_bytes"] / 2**20, 1)
    names = {d["name"].lower() for d in listed}
    out["absent"] = sorted(n for n in ("tensorflow", "keras", "open3d", "pytest", "playwright", "torch") if n not in names)
    return out


def start_time(venv: Path, *, smoke: bool = False, model: str = SMOKE_MODEL) -> dict:
    """Start ``python app.py`` from ``venv``; seconds until its page first answers HTTP 200 (then the smoke run)."""
    port = _free_port()
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    env.pop("GRADIO_ANALYTICS_ENABLED", None)  # the app's own default (off) is what a Space gets
    log = tempfile.TemporaryFile(mode="w+")
    start = time.perf_counter()
    proc = subprocess.Popen([str(_venv_python(venv)), "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            elapsed = time.perf_counter() - start
            if proc.poll() is not None or elapsed > START_DEADLINE_S:
                log.seek(0)
                raise RuntimeError(f"app.py did not serve {url} within {elapsed:.0f} s (exit {proc.returncode}):\n"
                                   + log.read()[-3000:])
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        first_200 = time.perf_counter() - start
        out = {"start_s": round(first_200, 1)}
        # The app prints its own start-up time just after the server answers.
        while time.perf_counter() - start < first_200 + 30:
            log.seek(0)
            if printed := re.search(r"ready in ([\d.]+) s", log.read()):
                out["app_ready_s"] = float(printed.group(1))
                break
            time.sleep(0.1)
        if smoke:
            r = subprocess.run([str(_venv_python(venv)), "-c", SMOKE, url, str(EXAMPLE), model], capture_output=True, text=True,
                               timeout=600, env=env)
            if r.returncode != 0:
                raise RuntimeError(f"the smoke run against the Space venv failed:\n{r.stdout}\n{r.stderr[-3000:]}")
            out["smoke"] = r.stdout.strip().splitlines()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", type=Path, help="where to create (or reuse) the venv; default: a temp dir, removed after")
    ap.add_argument("--requirements", type=Path, default=REQUIREMENTS, help="requirements file (default: %(default)s)")
    ap.add_argument("--starts", type=int, default=3, help="app starts to time, the median is reported (default: %(default)s)")
    ap.add_argument("--model", default=SMOKE_MODEL, help="model the smoke run asks the app for (default: %(default)s)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    venv = args.venv or Path(tempfile.mkdtemp(prefix="hv-space-")) / "venv"
    try:
        result = {"requirements": str(args.requirements.relative_to(ROOT) if args.requirements.is_relative_to(ROOT)
                                      else args.requirements),
                  "python": sys.version.split()[0], "cpus": os.cpu_count()}
        result |= install(venv, args.requirements)
        starts = [start_time(venv, smoke=i == 0, model=args.model) for i in range(max(1, args.starts))]
        result["smoke"] = starts[0]["smoke"]
        result["start_s_all"] = [s["start_s"] for s in starts]
        result["start_s"] = sorted(result["start_s_all"])[len(starts) // 2]
        result["app_ready_s_all"] = [s.get("app_ready_s") for s in starts]
    finally:
        if args.venv is None:
            shutil.rmtree(venv.parent, ignore_errors=True)
    print(json.dumps(result, indent=2))
    print(f"{result['requirements']}: {result['venv_mib']:.0f} MiB venv, {result['distributions']} distributions "
          f"(pip install {result['pip_install_s']:.0f} s); python app.py: first HTTP 200 after {result['start_s']:.1f} s "
          f"(median of {len(starts)}; app printed {result['app_ready_s_all']})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")  # stdlib only: not commands.write_json
    return 0


if __name__ == "__main__":
    sys.exit(main())
