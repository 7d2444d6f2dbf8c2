"""Bad input to the web app's endpoints (an audit with gradio_client): each is refused with a message that says what
to do, without a traceback in the server log, without a silent wrong answer, and without losing anything saved.

Through the in-process app (tests/conftest.py) where a request is the point; the adapt checks call the handlers'
helpers directly, with a temporary models folder (never the checkout's models/)."""

import json
import logging
import os
import re
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import EXAMPLES
from tests.test_review_tab import (CELL, OPENED, VIEW, client, named, open_zip, reviews_in,  # noqa: F401
                                   slide, working_db)

pytest.importorskip("gradio_client", reason="the API tests need gradio_client (requirements.txt)")
from gradio_client import handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

WBC_EXAMPLE = EXAMPLES / "wbc" / "neutrophil__BNE_107370.jpg"
HEX_FOLDER = re.compile(r"[0-9a-f]{24}")


@pytest.fixture
def opened(client, slide):  # noqa: F811 - the fixtures of test_review_tab
    return open_zip(client, slide)


def no_traceback(capfd):
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, out + err


# --------------------------------------------------------------------------- 3: Gradio's own checks, no traceback


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(WBC_EXAMPLE.read_bytes())
    return path


@pytest.mark.parametrize("endpoint, args, message", [
    ("/zstack_mesh", lambda png: (handle_file(png),), r"Invalid file type.*\.tif.*Upload a file of one of those types"),
    ("/review_open", lambda png: (handle_file(png),), r"Invalid file type.*\.sqlite"),
    ("/batch", lambda png: ([handle_file(png)], "nope"), r"'nope' is not one of the choices for Model; choose one of: wbc, all"),
    ("/model_card", lambda png: ("nope",), r"'nope' is not one of the choices for Model card; choose one of: wbc, all"),
])
def test_gradio_input_checks_are_refusals_without_a_traceback(client, png, capfd, caplog, endpoint, args, message):  # noqa: F811
    capfd.readouterr()
    with caplog.at_level(logging.WARNING, logger="hematovision.app"):
        with pytest.raises(AppError, match=message):
            client.predict(*args(png), api_name=endpoint)
    no_traceback(capfd)
    assert [r.levelno for r in caplog.records if r.name == "hematovision.app"] == [logging.WARNING]


@pytest.mark.parametrize("endpoint, args", [
    ("/review_page", ("basophil", 0)), ("/review_page", ("basophil", -3)),
    ("/review_confirm", ("basophil", 0, "A. Smith")), ("/review_confirm", ("basophil", -3, "A. Smith")),
])
def test_a_page_below_1_is_refused_without_a_traceback(opened, capfd, client, endpoint, args):  # noqa: F811
    capfd.readouterr()
    with pytest.raises(AppError, match=r"page '-?\d+' is not a page number: send a whole number from 1"):
        client.predict(opened.db, *args, api_name=endpoint)
    no_traceback(capfd)


def test_the_input_check_names_a_number_input_and_its_range():
    import gradio as gr
    from gradio.exceptions import Error

    from hematovision.web.errors import input_problem

    blocks = [gr.Textbox(label="Database"), gr.Number(label="Page", minimum=1, precision=0)]
    message = input_problem(blocks, ["db", 0], Error("Value 0 is less than minimum value 1."))
    assert message == "Page must be a number from 1, not '0'."


# --------------------------------------------------------------------------- 2 and 4: cell ids, pages and classes


@pytest.mark.parametrize("page, message", [
    ("abc", "page 'abc' is not a page number"), (0, "page '0' is not a page number"),
    (-1, "page '-1' is not a page number"), (1.5, "page '1.5' is not a page number"),
])
def test_review_set_checks_the_page_before_writing(app, client, slide, opened, page, message):  # noqa: F811
    with pytest.raises(AppError, match=message):
        client.predict(opened.db, opened.cell_id, "basophil", "", "alice", "basophil", page, api_name="/review_set")
    assert reviews_in(working_db(app, slide.zip)) == []


@pytest.mark.parametrize("class_name", ["nonclass", "pre_b"])
def test_review_set_checks_the_class_page_before_writing(app, client, slide, opened, class_name):  # noqa: F811
    with pytest.raises(AppError, match=f"'{class_name}' is not a class of this slide's model \\(choose one of basophil"):
        client.predict(opened.db, opened.cell_id, "basophil", "", "alice", class_name, 1, api_name="/review_set")
    assert reviews_in(working_db(app, slide.zip)) == []


@pytest.mark.parametrize("cell_id, message", [
    (True, "cell id 'True' is not a cell number"), (1.5, "cell id '1.5' is not a cell number"),
    ("abc", "cell id 'abc' is not a cell number"), ("inf", "cell id 'inf' is not a cell number"),
    (10**30, "No cell 1000000000000000000000000000000 in slide.sqlite"),
])
def test_review_set_refuses_a_cell_id_that_is_not_a_whole_number(app, client, slide, opened, cell_id, message):  # noqa: F811
    with pytest.raises(AppError, match=message):
        client.predict(opened.db, cell_id, "basophil", "", "alice", api_name="/review_set")
    assert reviews_in(working_db(app, slide.zip)) == []


@pytest.mark.parametrize("endpoint", ["/review_cell", "/review_cam"])
@pytest.mark.parametrize("cell_id, message", [
    ("abc", "cell id 'abc' is not a cell number"), (1.5, "cell id '1.5' is not a cell number"),
    (True, "cell id 'True' is not a cell number"), ("", "Pick a cell in the gallery first"),
    (-1, "No cell -1 in slide.sqlite; pick a cell in the gallery"),
    (999999, "No cell 999999 in slide.sqlite; pick a cell in the gallery"),
])
def test_a_cell_id_is_a_whole_number_of_an_existing_cell(client, opened, capfd, endpoint, cell_id, message):  # noqa: F811
    capfd.readouterr()
    with pytest.raises(AppError, match=message) as info:
        client.predict(opened.db, cell_id, api_name=endpoint)
    assert "handle_file" not in str(info.value)
    no_traceback(capfd)


def test_a_cell_id_sent_as_text_still_works(client, opened):  # noqa: F811
    view = named(CELL, client.predict(opened.db, str(opened.cell_id), api_name="/review_cell"))
    assert view.cell_id == opened.cell_id


@pytest.mark.parametrize("class_name, page, message", [
    ("nonclass", 1, r"'nonclass' is not a class of this slide's model \(choose one of basophil"),
    ("basophil", "abc", "page 'abc' is not a page number"),
    ("basophil", 1.5, "page '1.5' is not a page number"),
])
def test_review_page_refuses_an_unknown_class_or_a_bad_page(client, opened, class_name, page, message):  # noqa: F811
    with pytest.raises(AppError, match=message):
        client.predict(opened.db, class_name, page, api_name="/review_page")


def test_review_page_past_the_last_shows_the_last_page(client, opened):  # noqa: F811
    label = opened.klass["value"]
    view = named((*VIEW, *CELL), client.predict(opened.db, label, 99, api_name="/review_page"))
    assert view.page["value"] == 1 and "of 1" in view.page["label"]


@pytest.mark.parametrize("opacity", ["abc", -1, 5, "nan", True])
def test_explain_refuses_an_opacity_outside_0_to_1(client, opacity):
    with pytest.raises(AppError, match="opacity must be a number from 0 to 1"):
        client.predict(handle_file(WBC_EXAMPLE), "wbc", opacity, api_name="/explain")


# --------------------------------------------------------------------------- 5: station zips


def station_zip(slide, path, extra):  # noqa: F811
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(slide.folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(slide.folder.parent))
        for name, data in extra.items():
            zf.writestr(name, data)
    return path


def test_only_the_station_files_of_a_zip_are_unpacked(app, client, slide, tmp_path):  # noqa: F811
    archive = station_zip(slide, tmp_path / "extra.zip", {"slide/zeros.bin": bytes(8 << 20), "slide/notes.txt": b"hi"})
    opened = named(OPENED, client.predict(handle_file(archive), api_name="/review_open"))
    folder = working_db(app, archive).parent
    assert opened.progress.startswith(f"**0 of {slide.cells} verified**")
    assert not (folder / "zeros.bin").exists() and not (folder / "notes.txt").exists()
    assert (folder / "slide.sqlite").is_file() and any(folder.rglob("*.jpg"))


@pytest.mark.parametrize("extra, message", [
    ({"slide/slide.sqlite-wal": bytes(8 << 20)}, r"'slide/slide.sqlite-wal' would unpack to 8 MiB .*at most 200 times its packed size"),
    ({"slide/crops/big.jpg": bytes(65 << 20)}, r"'slide/crops/big.jpg' would unpack to 65 MiB .*64 MiB per crop"),
])
def test_a_zip_bomb_is_refused_before_anything_is_written(app, client, slide, tmp_path, extra, message):  # noqa: F811
    from hematovision.registry import sha256_file

    archive = station_zip(slide, tmp_path / "bomb.zip", extra)
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(archive), api_name="/review_open")
    assert not (app.UPLOAD_DIR / "hematovision-review" / sha256_file(archive)[:24]).exists()


def test_the_total_unpacked_size_is_capped(client, slide, tmp_path, monkeypatch):  # noqa: F811
    from hematovision.web import review_files

    monkeypatch.setattr(review_files, "MAX_UNZIPPED_BYTES", 1000)
    with pytest.raises(AppError, match=r"would unpack to .* GiB, over the app's 0.0 GiB limit; upload the .sqlite alone"):
        client.predict(handle_file(slide.zip), api_name="/review_open")


def test_old_untouched_working_copies_are_removed_and_reviewed_ones_kept(tmp_path):
    from hematovision.web.review_files import KEEP_WORKING_COPIES, MARKER, remove_old_copies

    reviews = {}
    old = time.time() - 7200
    for i in range(KEEP_WORKING_COPIES + 6):
        folder = tmp_path / f"copy{i:02d}"
        (folder / "slide").mkdir(parents=True)
        db = folder / "slide" / "slide.sqlite"
        db.write_bytes(b"x")
        if i != 1:  # copy01: no marker (unknown): kept
            (folder / MARKER).write_text("3")
        reviews[db] = 5 if i == 0 else 3  # copy00: reviews made in the app
        for p in (db, *folder.glob(MARKER), folder / "slide", folder):
            os.utime(p, (old + i, old + i))
    removed = remove_old_copies(tmp_path, lambda db: reviews[db])
    assert sorted(removed) == [f"copy{i:02d}" for i in range(2, 6)]
    assert (tmp_path / "copy00").is_dir() and (tmp_path / "copy01").is_dir()
    assert len([f for f in tmp_path.iterdir()]) == KEEP_WORKING_COPIES + 2


def test_an_opened_upload_records_its_reviews_at_upload(app, client, slide):  # noqa: F811
    open_zip(client, slide)
    folder = working_db(app, slide.zip).parent.parent
    assert (folder / ".reviews-at-upload").read_text() == "0"


# --------------------------------------------------------------------------- 6: messages name the user's file only


def truncated(path):
    from tests.test_review_tab import make_slide
    from hematovision.web.models import STORE

    made = make_slide(STORE.models["wbc"], path.parent / "full")
    path.write_bytes(made.db.read_bytes()[: 3 * 4096])


@pytest.mark.parametrize("make", [
    lambda p: p.write_text("not a database\n"), lambda p: p.write_bytes(b""),
    lambda p: p.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64), truncated,
], ids=["text", "empty", "corrupt", "truncated"])
def test_a_bad_database_message_names_the_file_only(client, tmp_path, make):  # noqa: F811
    path = tmp_path / f"bad{time.time_ns()}.sqlite"
    make(path)
    with pytest.raises(AppError) as info:
        client.predict(handle_file(path), api_name="/review_open")
    message = str(info.value)
    assert path.name in message and not HEX_FOLDER.search(message), message
    assert "`" not in message and "--db " not in message and "/tmp" not in message, message


def test_an_unknown_cell_to_review_set_names_the_file_only(client, opened):  # noqa: F811
    with pytest.raises(AppError, match="No cell 999999 in slide.sqlite; pick a cell in the gallery") as info:
        client.predict(opened.db, 999999, "basophil", "", "alice", "basophil", 1, api_name="/review_set")
    assert not HEX_FOLDER.search(str(info.value)) and "--list" not in str(info.value)


def test_a_missing_server_database_points_to_the_apps_flag(client, tmp_path, monkeypatch):  # noqa: F811
    from hematovision.web import review_db

    monkeypatch.setattr(review_db, "_configured", tmp_path / "served.sqlite")
    with pytest.raises(AppError, match=r"served.sqlite: no such station database. Check the path \(the app's --review-db"):
        client.predict("server", "basophil", 1, api_name="/review_page")


# --------------------------------------------------------------------------- 1: adapt never replaces another database's model


def fake_adapt_from_db(model, db_path, out, *, name, l2, session_ids):
    """What adapt_from_db writes (the parts the app reads), without fitting anything."""
    cells = 15 if "slideA" in str(db_path) else 2
    data = {"name": name, "adaptation": {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "cells": {"count_per_class": {"basophil": cells}, "from_station_db": {"db": str(Path(db_path).resolve())}},
        "cross_validation": {"folds": 2, "before": {"accuracy": 0.5, "balanced_accuracy": 0.5},
                             "after": {"accuracy": 0.9, "balanced_accuracy": 0.9}}}}
    path = out / f"{name}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def models_folder(app, tmp_path, monkeypatch):
    from hematovision.web import review_actions
    from hematovision.web.models import STORE

    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setattr(STORE, "folder", folder)
    monkeypatch.setattr(STORE, "refresh", lambda strict=False: [])
    monkeypatch.setattr(review_actions, "adapt_from_db", fake_adapt_from_db)
    return folder


def lab_slide(app, tmp_path, name):
    clf = app.MODELS["wbc"]
    return SimpleNamespace(model_name="wbc", model_sha256=clf.spec.sha256, db_path=str(tmp_path / name / "slide.sqlite"))


@pytest.mark.parametrize("name", ["wbc-lab", "", "  "])
def test_adapt_refuses_a_lab_model_made_from_another_database(app, tmp_path, models_folder, name):
    import gradio as gr

    from hematovision.web.review_actions import adapt_model, adaptation_summary, suggested_name

    slide_a, slide_b = lab_slide(app, tmp_path, "slideA"), lab_slide(app, tmp_path, "slideB")
    adapt_model(None, slide_a, "wbc-lab")
    before = (models_folder / "wbc-lab.json").read_bytes()
    with pytest.raises(gr.Error, match=r"wbc-lab already exists \(adapted \d{4}-\d\d-\d\d \d\d:\d\d from slide.sqlite, "
                                       r"15 cells\); choose another name, e.g. wbc-lab-2"):
        adapt_model(None, slide_b, name)
    assert (models_folder / "wbc-lab.json").read_bytes() == before
    assert suggested_name(slide_b) == "wbc-lab-2" and suggested_name(slide_a) == "wbc-lab"
    # The same database again (more reviews): replaced, and the summary says so.
    name_, data, earlier = adapt_model(None, slide_a, name)
    assert name_ == "wbc-lab" and earlier is not None
    assert adaptation_summary(name_, data, earlier).startswith("Replaced the earlier wbc-lab (15 cells, adapted ")


def test_two_adapts_at_once_do_not_both_take_a_free_name(app, tmp_path, models_folder, monkeypatch):
    """With a queue concurrency above 1, two reviewers may press Adapt together: the second must see the first's model."""
    import threading

    import gradio as gr

    from hematovision.web import review_actions

    def slow_fake(*args, **kwargs):  # the fit takes time between the name check and the write
        time.sleep(0.3)
        return fake_adapt_from_db(*args, **kwargs)

    monkeypatch.setattr(review_actions, "adapt_from_db", slow_fake)
    results = {}

    def press(slide_name):
        try:
            results[slide_name] = review_actions.adapt_model(None, lab_slide(app, tmp_path, slide_name), "wbc-lab")[0]
        except gr.Error as exc:
            results[slide_name] = exc

    threads = [threading.Thread(target=press, args=(n,)) for n in ("slideA", "slideB")]
    [t.start() for t in threads]
    [t.join(timeout=10) for t in threads]
    made = [n for n, r in results.items() if r == "wbc-lab"]
    refused = [n for n, r in results.items() if isinstance(r, gr.Error)]
    assert len(made) == 1 and len(refused) == 1, results
    assert "wbc-lab already exists" in str(results[refused[0]])
    db = json.loads((models_folder / "wbc-lab.json").read_text())["adaptation"]["cells"]["from_station_db"]["db"]
    assert made[0] in db  # the model on disk is the one whose adapt succeeded


@pytest.mark.parametrize("name", ["WBC", "All", "wbc", "Wbc-Lab"])
def test_adapt_refuses_a_name_the_app_has_ignoring_case(app, tmp_path, models_folder, name):
    import gradio as gr

    from hematovision.web.review_actions import adapt_model

    (models_folder / "wbc-lab.json").write_text("{}")  # a model file, not a lab adaptation
    with pytest.raises(gr.Error, match=f"{name} is the name of a model the app already has"):
        adapt_model(None, lab_slide(app, tmp_path, "slideA"), name)
    assert not (models_folder / f"{name}.json").exists() or name == "wbc-lab"
