import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "hematovision", *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


@pytest.fixture
def images(tmp_path, disc):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for label in ("red", "green", "blue"):
        Image.fromarray(disc(label, seed=7)).save(folder / f"{label}.png")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


def test_classify_folder_json_lines(tiny_models, images, tmp_path):
    cams = tmp_path / "cams"
    r = cli("classify", "--model", tiny_models["tiny-int8"], "--cam-dir", cams, images)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["label"] for row in rows] == ["blue", "green", "red"]  # sorted file names
    for row in rows:
        assert set(row) == {"path", "label", "confidence", "probabilities", "uncertain", "out_of_distribution"}
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    pngs = sorted(cams.glob("*.png"))
    assert len(pngs) == 3 and Image.open(pngs[0]).size == (96, 96)


def test_bad_input_reported_and_run_continues(tiny_models, images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    r = cli("classify", "--model", tiny_models["tiny-float32"], bad, tmp_path / "missing.png", images / "red.png")
    assert r.returncode == 1
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert "error" in rows[0] and "\n" not in rows[0]["error"]
    assert "no such file" in rows[1]["error"]
    assert rows[2]["label"] == "red"
    assert "Traceback" not in r.stderr


def test_usage_errors_exit_2():
    assert cli().returncode == 2
    assert cli("classify").returncode == 2
    assert cli("frobnicate").returncode == 2


def test_missing_model_exit_1_with_instructions(tmp_path):
    r = cli("classify", "--model", tmp_path / "nope.tflite", tmp_path)
    assert r.returncode == 1 and "no such model file" in r.stderr and "Traceback" not in r.stderr


def test_help_documents_output():
    r = cli("classify", "--help")
    assert r.returncode == 0 and "JSON" in r.stdout and "--cam-dir" in r.stdout
