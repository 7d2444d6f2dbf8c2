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


def _hundred_cells(folder: Path) -> int:
    """96 labelled cells from examples/wbc: each of the 16 examples in 6 views (4 rotations, 2 mirrors) at different brightness."""
    import cv2
    import numpy as np

    n = 0
    for path in sorted((EXAMPLES / "wbc").glob("*.jpg")):
        label = path.name.split("__")[0]
        (folder / label).mkdir(parents=True, exist_ok=True)
        img = cv2.imread(str(path))
        for i, gain in enumerate((0.85, 0.92, 1.0, 1.05, 1.1, 1.15)):
            view = np.rot90(img, i % 4) if i < 4 else np.fliplr(img)
            cv2.imwrite(str(folder / label / f"{path.stem}_{i}.png"), np.clip(view * gain, 0, 255).astype(np.uint8))
            n += 1
    return n


def test_edge_venv_calibrates_the_camera_then_runs_the_station_at_that_scale(edge_python, tiny_models, tmp_path):
    """A lab's set-up on the Pi: calibrate on a few fields, pass the printed option to the station."""
    import numpy as np
    from PIL import Image

    from tests.test_field import synthetic_field

    fields = tmp_path / "fields"
    fields.mkdir()
    for seed in range(3):
        Image.fromarray(synthetic_field(seed=seed, n_white=2)[0]).save(fields / f"field_{seed}.png")
    r = subprocess.run([str(edge_python), "-m", "hematovision", "calibrate", str(fields), "--overlay", str(tmp_path / "c.png")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["red_cell_px"] == pytest.approx(np.sqrt(480 * 640) / 5, rel=0.1)  # the fields' red cells
    assert (tmp_path / "c.png").is_file()
    r = subprocess.run([str(edge_python), "-m", "hematovision", "station", "--source", f"folder:{fields}", "--no-watch",
                        "--model", str(tiny_models["tiny-int8"]), "--db", str(tmp_path / "s.sqlite"),
                        *out["station_option"].split()], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Differential: 6 cells" in r.stdout


def test_edge_venv_adapts_100_cells_in_under_30_s(edge_python, tmp_path):
    """Issue 12: `adapt` needs only the edge install (numpy + LiteRT) and runs in seconds on ~100 cells."""
    if not (ROOT / "models" / "wbc.json").exists() or not (EXAMPLES / "wbc").exists():
        pytest.skip("shipped wbc model or examples/wbc not present")
    n = _hundred_cells(tmp_path / "cells")
    assert n >= 90
    env = {**os.environ, "HEMATOVISION_MODELS": str(ROOT / "models")}
    import time

    t0 = time.perf_counter()
    r = subprocess.run([str(edge_python), "-m", "hematovision", "adapt", "--model", "wbc", "--cells", str(tmp_path / "cells"),
                        "--out", str(tmp_path / "out"), "--name", "wbc-edge"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    seconds = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "out" / "wbc-edge.json").exists()
    assert seconds < 30, f"adapt took {seconds:.1f} s on {n} cells"


def test_edge_venv_scopes_a_model_and_classifies_with_it(edge_python, tiny_models, tmp_path, disc):
    """`scope` needs only the edge install, and the scoped model flags a cell whose first choice it does not count."""
    from PIL import Image

    r = subprocess.run([str(edge_python), "-m", "hematovision", "scope", "--model", str(tiny_models["tiny-int8"]),
                        "--classes", "red", "green", "--out", str(tmp_path / "lab"), "--name", "rg"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    img = tmp_path / "blue.png"
    Image.fromarray(disc("blue", seed=3)).save(img)
    r = subprocess.run([str(edge_python), "-m", "hematovision", "classify", "--model", str(tmp_path / "lab" / "rg.json"), str(img)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["outside_scope"] == "blue" and row["uncertain"] and row["label"] in ("red", "green")
