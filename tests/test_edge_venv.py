"""The Raspberry Pi claim: a clean venv with only requirements-edge.txt runs the CLI and the station."""

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT, EXAMPLES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def edge_python(tmp_path_factory):
    env_dir = tmp_path_factory.mktemp("edge-venv")
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    for args in (["-r", str(ROOT / "requirements-edge.txt")], ["--no-deps", str(ROOT)]):
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                           capture_output=True, text=True, timeout=900, cwd=tmp_path_factory.mktemp("build"))
        assert r.returncode == 0, r.stderr[-3000:]
    return py


def test_edge_venv_has_no_heavy_packages(edge_python):
    r = subprocess.run([str(edge_python), "-c", "import importlib.util as u; print([m for m in ('tensorflow','gradio','open3d','keras','huggingface_hub') if u.find_spec(m)])"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "[]"


def test_edge_venv_classifies_with_tiny_model(edge_python, tiny_models, tmp_path, disc):
    from PIL import Image

    img = tmp_path / "red.png"
    Image.fromarray(disc("red", seed=3)).save(img)
    r = subprocess.run([str(edge_python), "-m", "hematovision", "classify", "--model", str(tiny_models["tiny-int8"]), "--cam-dir", str(tmp_path / "cams"), str(img)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["label"] == "red"


def test_edge_venv_classifies_examples_with_shipped_model(edge_python, tmp_path):
    if not (ROOT / "models" / "wbc.json").exists() or not (EXAMPLES / "wbc").exists():
        pytest.skip("shipped wbc model or examples/wbc not present")
    env = {**os.environ, "HEMATOVISION_MODELS": str(ROOT / "models")}
    r = subprocess.run([str(edge_python), "-m", "hematovision", "classify", "--model", "wbc", str(EXAMPLES / "wbc")],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows and all(Path(row["path"]).name.split("__")[0] == row["label"] for row in rows)


def test_edge_venv_runs_station(edge_python, tiny_models, tmp_path):
    """The station on a watched-folder source (3 generated fields, 2 white cells each), then the report."""
    from PIL import Image

    from tests.test_field import synthetic_field

    fields = tmp_path / "fields"
    fields.mkdir()
    for seed in range(3):
        Image.fromarray(synthetic_field(seed=seed, n_white=2)[0]).save(fields / f"field_{seed}.png")
    db = tmp_path / "log" / "station.sqlite"
    r = subprocess.run([str(edge_python), "-m", "hematovision", "station", "--source", f"folder:{fields}", "--no-watch",
                        "--model", str(tiny_models["tiny-int8"]), "--db", str(db)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Differential: 6 cells" in r.stdout
    r = subprocess.run([str(edge_python), "-m", "hematovision", "report", "--db", str(db), "--csv", str(tmp_path / "cells.csv")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Differential: 6 cells" in r.stdout
    assert len((tmp_path / "cells.csv").read_text().splitlines()) == 7
    assert len(list((tmp_path / "log" / "station-crops").rglob("*.jpg"))) == 6
