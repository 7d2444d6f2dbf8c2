"""A model is files in a models folder: a copy of the shipped wbc under a new name and description is offered by
``load_model``, the registry, the CLI (classify and its --help) and the station with no code change.
(The app's choices through the Gradio API: tests/test_app_models.py.)"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import EXAMPLES, ROOT
from tests.test_app_models import copy_as

NAME, DISPLAY = "wbc-droptest", "White cells, drop-in test"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    src = ROOT / "models" / "wbc.json"
    if not src.exists():
        pytest.skip("models/wbc.json not shipped")
    dest = tmp_path_factory.mktemp("models")
    for f in (ROOT / "models").glob("wbc.*"):
        if f.suffix != ".keras":
            shutil.copyfile(f, dest / f.name)
    copy_as(dest / "wbc.json", dest, NAME, display_name=DISPLAY,
            descriptions={**json.loads(src.read_text())["descriptions"], "neutrophil": "Neutrophil, as this lab sees it."})
    return dest


def _cli(models, *args):
    env = dict(os.environ, HEMATOVISION_MODELS=str(models), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "hematovision", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


def test_load_model_and_the_registry_offer_it(models):
    from hematovision import load_model
    from hematovision.registry import list_models, model_names

    assert NAME in model_names(models) and NAME in [s.name for s in list_models(models)]
    clf = load_model(NAME, models_dir=models)
    assert clf.spec.display_name == DISPLAY and clf.spec.raw["descriptions"]["neutrophil"].endswith("as this lab sees it.")
    image = next((EXAMPLES / "wbc").glob("neutrophil__*.jpg"))
    ours, shipped = clf.predict(image), load_model(models / "wbc.json").predict(image)
    assert ours.model == NAME and ours.label == shipped.label
    assert ours.confidence == pytest.approx(shipped.confidence, abs=1e-9)


def test_the_cli_classifies_with_it_and_lists_it(models):
    image = next((EXAMPLES / "wbc").glob("neutrophil__*.jpg"))
    r = _cli(models, "classify", "--model", NAME, str(image))
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout.splitlines()[0])
    assert row["label"] == "neutrophil" and "error" not in row
    r = _cli(models, "classify", "--help")
    assert r.returncode == 0 and NAME in " ".join(r.stdout.split()), r.stdout


def test_the_station_runs_with_it(models, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for image in sorted((EXAMPLES / "wbc").glob("*.jpg"))[:3]:
        shutil.copyfile(image, folder / image.name)
    db = tmp_path / "station.sqlite"
    r = _cli(models, "station", "--source", f"folder:{folder}", "--model", NAME, "--db", str(db), "--mode", "cell",
             "--no-watch")
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(db) as con:
        models_logged = {m for (m,) in con.execute("SELECT model_name FROM cells")}
        n = con.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    assert n == 3 and models_logged == {NAME}
