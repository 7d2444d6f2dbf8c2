"""Models are data in the app: a model dropped in the models folder is offered and used with no code change.

`python app.py` with HEMATOVISION_MODELS pointing at a folder holding the shipped models and a copy of the wbc model
under a new name and display name (its .tflite, .head.npz, .ood.npz and morphology reference copied unchanged, so
every sha256 still matches): its choices through the Gradio API (/info and /config) offer it, /classify, /morphology
and /model_card work with it. A model without a morphology reference says so in the Morphology tab; a broken model
is skipped with a log line and the app still starts; each examples folder gives one gallery.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.test_app import WBC_EXAMPLE, app_process, import_app, models_dir, rows_of

pytest.importorskip("gradio_client", reason="the API tests need gradio_client (requirements.txt)")
from gradio_client import Client, handle_file  # noqa: E402

#: The files of a model besides its JSON, by the JSON field that names them.
NAMED_FILES = (("file",), ("cam", "head_file"), ("ood", "file"), ("morphology", "reference_file"))


def copy_as(source_json: Path, dest: Path, name: str, **fields) -> Path:
    """Copy a model under a new name: each file it names copied unchanged (sha256 intact) under the new name,
    the JSON with its new name, file names and ``fields``."""
    data = json.loads(source_json.read_text(encoding="utf-8"))
    for keys in NAMED_FILES:
        holder = data
        for key in keys[:-1]:
            holder = holder.get(key) or {}
        if holder.get(keys[-1]):
            old = holder[keys[-1]]
            holder[keys[-1]] = name + old[len(data["name"]):] if old.startswith(data["name"]) else old
            shutil.copyfile(source_json.parent / old, dest / holder[keys[-1]])
    data.update(name=name, **fields)
    path = dest / f"{name}.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import_app()  # skips without the shipped models
    dest = tmp_path_factory.mktemp("models")
    for f in models_dir().iterdir():
        if f.name.split(".")[0] in ("wbc", "all") and f.suffix != ".keras" and f.is_file():
            shutil.copyfile(f, dest / f.name)
    copy_as(dest / "wbc.json", dest, "wbc-mylab", display_name="White cells, my lab")
    no_reference = copy_as(dest / "wbc.json", dest, "wbc-noref", display_name="White cells, no reference", examples=None)
    data = json.loads(no_reference.read_text())
    del data["morphology"]["reference_file"]
    no_reference.write_text(json.dumps(data))
    copy_as(dest / "wbc.json", dest, "wbc-broken", display_name="Broken").with_suffix(".tflite").unlink()
    from hematovision.lab_scope import scope_model

    scope_model(dest / "wbc.json", ["neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil"], dest,
                name="wbc-5part", log=lambda msg: None)
    return dest


@pytest.fixture(scope="module")
def served(models):
    env = dict(os.environ, HEMATOVISION_MODELS=str(models), HF_HUB_OFFLINE="1")
    with app_process(env=env) as (url, lines):
        yield url, lines


def test_a_copied_model_is_offered_through_the_api(served):
    import httpx

    url, _ = served
    client = Client(url, verbose=False)
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for endpoint in ("/classify", "/explain", "/mesh", "/morphology", "/batch"):
        enum = next(p for p in endpoints[endpoint]["parameters"] if p["parameter_name"] == "model_name")["type"]["enum"]
        assert enum == ["wbc", "all", "wbc-5part", "wbc-mylab", "wbc-noref"], (endpoint, enum)
    config = httpx.get(f"{url}config", timeout=30).json()
    radio = next(c for c in config["components"] if c["props"].get("elem_id") == "model")
    assert ["White cells, my lab", "wbc-mylab"] in radio["props"]["choices"]
    assert ["White-cell type (8 classes), lab scope: 5 classes", "wbc-5part"] in radio["props"]["choices"]
    assert ["White-cell type (8 classes)", "wbc"] in radio["props"]["choices"]
    galleries = sorted(c["props"]["label"] for c in config["components"] if c["type"] == "dataset")
    assert galleries == ["Examples: Leukemia stage, ALL (4 classes)", "Examples: White-cell type (8 classes)"]


def test_a_copied_model_classifies_measures_and_has_a_card(served):
    url, _ = served
    client = Client(url, verbose=False)
    _, _, ours = client.predict(handle_file(WBC_EXAMPLE), "wbc-mylab", api_name="/classify")
    _, _, shipped = client.predict(handle_file(WBC_EXAMPLE), "wbc", api_name="/classify")
    assert ours["model"] == "wbc-mylab" and ours["label"] == shipped["label"]
    assert ours["probabilities"] == pytest.approx(shipped["probabilities"], abs=1e-6)  # the same network, verified
    table, _, summary = client.predict(handle_file(WBC_EXAMPLE), "wbc-mylab", api_name="/morphology")
    assert "Compared with normal" in summary and all(r["normal (5-95 %)"] for r in rows_of(table))
    card = client.predict("wbc-mylab", api_name="/model_card")
    assert "White cells, my lab" in card and "wbc-mylab" in card


def test_a_scoped_lab_model_flags_a_first_choice_it_does_not_count(served):
    """A five-part lab's copy (``python -m hematovision scope``): an immature granulocyte, which the lab does not
    count, gets the best counted class, is flagged and is named as the model's first choice; a neutrophil is as before."""
    url, _ = served
    client = Client(url, verbose=False)
    ig = WBC_EXAMPLE.parent / "ig__IG_198074.jpg"
    _, _, shipped = client.predict(handle_file(ig), "wbc", api_name="/classify")
    assert shipped["label"] == "ig"
    _, card, ours = client.predict(handle_file(ig), "wbc-5part", api_name="/classify")
    assert ours["outside_scope"] == "ig" and ours["uncertain"] is True
    assert ours["label"] in ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil")
    assert ours["probabilities"] == pytest.approx(shipped["probabilities"], abs=1e-6)  # not renormalised
    assert "Outside this lab" in card and "<b>ig</b>" in card
    _, _, neutrophil = client.predict(handle_file(WBC_EXAMPLE), "wbc-5part", api_name="/classify")
    assert neutrophil["label"] == "neutrophil" and neutrophil["outside_scope"] is None
    card = client.predict("wbc-5part", api_name="/model_card")
    assert "Lab differential scope" in card and "erythroblast or ig or platelet is flagged" in card
    # the Batch tab counts the first choices the lab does not count, like an analyser's suspect flags
    files = [handle_file(ig), handle_file(WBC_EXAMPLE)]
    _, differential, *_, summary = client.predict(files, "wbc-5part", api_name="/batch")
    assert "outside this lab's differential" in summary and summary.rstrip().endswith(": ig 1.")
    # its differential lists only the classes it counts: no "ig 0 %" for a class it never names
    assert [r["class"] for r in rows_of(differential)] == ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    _, differential, *_, summary = client.predict(files, "wbc", api_name="/batch")
    assert "outside this lab's differential" not in summary and len(rows_of(differential)) == 8


def test_a_model_without_a_morphology_reference_says_so(served):
    url, _ = served
    table, plot, summary = Client(url, verbose=False).predict(handle_file(WBC_EXAMPLE), "wbc-noref", api_name="/morphology")
    assert "names no normal morphology reference" in summary and "wbc-noref.json" in summary
    assert rows_of(table) and plot is None


def test_a_broken_model_is_skipped_with_a_log_line(served):
    url, lines = served
    skipped = [line for line in lines if "wbc-broken" in line]
    assert skipped and "skipped" in skipped[0] and "model file missing" in skipped[0], lines
