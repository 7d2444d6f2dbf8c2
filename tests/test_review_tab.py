"""The app's Review tab through its public API (gradio_client): open a station database made by running the station
over example images with the shipped model, page through classes (flagged cells first), record and confirm verified
labels, see the verified differential, export the CSV; bad input refused with a clear message and nothing written;
`python app.py --review-db PATH` and the adapt button (the adapted model joins the choices).

Research use only: the verified differential is the reviewer's, HematoVision is not a diagnostic device.
"""

import csv
import io
import os
import shutil
import sqlite3
import uuid
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import EXAMPLES, ROOT, app_process, import_app, models_dir
from tests.test_review import BAD_FILES

pytest.importorskip("gradio_client", reason="the API tests need gradio_client (requirements.txt)")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

WBC_FILES = sorted((EXAMPLES / "wbc").glob("*.jpg")) + sorted((EXAMPLES / "hard").glob("*.jpg"))


def _checkerboard():
    y, x = np.mgrid[0:200, 0:200]
    checker = (((x // 10 + y // 10) % 2) * 255).astype(np.uint8)
    return np.dstack([checker, 255 - checker, checker])


def make_slide(clf, folder: Path) -> SimpleNamespace:
    """Run the station (cell mode) over the wbc examples, the hard example and a checkerboard (out of distribution):
    FOLDER/slide/slide.sqlite with its crops, and FOLDER/slide.zip of that station folder. Every call gives a new
    database (its times differ), so an upload of it is a new working copy."""
    import hematovision as hv
    from hematovision.station.sources import FakeSource
    from hematovision.station.loop import Station, StationConfig

    station = folder / "slide"
    config = StationConfig(db_path=station / "slide.sqlite", mode="cell", summary_every=0)
    images = [hv.load_image(f) for f in WBC_FILES] + [_checkerboard()]
    with FakeSource(images, names=[f.name for f in WBC_FILES] + ["checkerboard.png"]) as source:
        Station(clf, config, printer=lambda _: None).run(source)
    archive = folder / "slide.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(station.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder))
    return SimpleNamespace(folder=station, db=config.db_path, zip=archive, cells=len(images))


def cells_of(db: Path) -> list[dict]:
    from hematovision.station.log import StationLog

    with StationLog(db, create=False) as log:
        return list(log.cells())


def reviews_in(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT cell_id, label, reviewer, note FROM reviews ORDER BY id").fetchall()


def working_db(app, upload: Path) -> Path:
    """The app's working copy of an uploaded station zip (where its reviews are written)."""
    from hematovision.registry import sha256_file

    return next((app.UPLOAD_DIR / "hematovision-review" / sha256_file(upload)[:24]).rglob("*.sqlite"))


def table(value: dict) -> dict[str, dict]:
    return {row[0]: dict(zip(value["headers"], row)) for row in value["data"]}


#: Outputs of /review_open, by name (the order of review_tab._wire's ``opened``).
OPENED = ("db", "source", "adapt_name", "scope_classes", "progress", "klass", "page", "gallery", "page_ids", "differential", "cell_id", "cell",
          "top3", "info", "label")
VIEW = ("progress", "klass", "page", "gallery", "page_ids", "differential")
CELL = ("cell_id", "cell", "top3", "info", "label")


def named(names, values) -> SimpleNamespace:
    assert len(names) == len(values), (names, values)
    return SimpleNamespace(**dict(zip(names, values)))


@pytest.fixture
def client(url):
    return Client(url, verbose=False)  # one session per test: its own open database


@pytest.fixture
def slide(app, tmp_path):
    return make_slide(app.MODELS["wbc"], tmp_path)


def open_zip(client, slide):
    return named(OPENED, client.predict(handle_file(slide.zip), api_name="/review_open"))


# --------------------------------------------------------------------------- opening and reading


def test_open_shows_progress_class_pages_and_flagged_cells_first(client, slide):
    opened = open_zip(client, slide)
    db = opened.db
    assert db.startswith("upload/") and db.endswith("slide.sqlite")
    assert opened.progress.startswith(f"**0 of {slide.cells} verified**")
    cells = cells_of(slide.db)
    flagged = [c for c in cells if c["uncertain"] or c["out_of_distribution"]]
    assert flagged, "precondition: the hard example or the checkerboard is flagged"
    assert f"0 of {len(flagged)} verified" in opened.progress
    classes = dict((value, text) for text, value in opened.klass["choices"])
    assert set(classes) == {c["label"] for c in cells}
    for label, text in classes.items():
        n, k = sum(c["label"] == label for c in cells), sum(c["label"] == label for c in flagged)
        assert text == f"{label}: {n} cells, {k} flagged, 0 verified"
    # The flagged cell's class page: it comes first (⚠), then the least confident.
    view = named((*VIEW, *CELL), client.predict(db, flagged[0]["label"], 1, api_name="/review_page"))
    captions = [item["caption"] for item in view.gallery]
    assert captions[0].startswith(f"#{flagged[0]['id']} ⚠") and view.page_ids[0] == flagged[0]["id"]
    same_class = [c for c in cells if c["label"] == flagged[0]["label"]]
    assert len(captions) == len(same_class)
    assert view.cell_id == flagged[0]["id"] and view.top3["label"] == flagged[0]["label"]
    assert len(view.top3["confidences"]) == 3
    # The thumbnails are the crops (from the zip), not grey placeholders.
    from PIL import Image

    thumb = np.asarray(Image.open(view.gallery[0]["image"]).convert("L"), np.float32)
    assert thumb.std() > 5
    labels = [value for _, value in opened.label["choices"]]
    assert labels[:8] == list(import_app().MODELS["wbc"].labels) and labels[8:] == ["smudge", "artefact", "unidentified", "other"]


def test_a_cell_shows_its_facts_and_grad_cam(client, slide):
    db = open_zip(client, slide).db
    cell = cells_of(slide.db)[0]
    view = named(CELL, client.predict(db, cell["id"], api_name="/review_cell"))
    assert f"Cell #{cell['id']}" in view.info and "Not verified yet" in view.info
    overlay, info = client.predict(db, cell["id"], api_name="/review_cam")
    from PIL import Image

    crop = Image.open(slide.db.parent / cell["crop_path"])
    assert Image.open(overlay).size == crop.size and "Grad-CAM" in info


# --------------------------------------------------------------------------- writing reviews


def test_reassign_confirm_and_the_verified_differential(app, client, slide):
    db = open_zip(client, slide).db
    cells = cells_of(slide.db)
    first = next(c for c in cells if c["label"] == "basophil")
    out = named((*VIEW, *CELL, "note"), client.predict(db, first["id"], "lymphocyte", "", "A. Smith", api_name="/review_set"))
    assert out.progress.startswith(f"**1 of {slide.cells} verified**") and "A. Smith" in out.progress
    diff = table(out.differential)
    assert diff["lymphocyte"]["verified"] == 1 and diff["basophil"]["verified"] == 0
    assert diff["basophil"]["agreement"] == "0/1 (0 %)" and diff["total"]["verified"] == 1
    assert diff["basophil"]["pre-classified"] == sum(c["label"] == "basophil" for c in cells)
    assert out.cell_id != first["id"], "the next unverified cell of the page is shown"
    view = named(VIEW, client.predict(db, "basophil", 1, "A. Smith", api_name="/review_confirm"))
    basophils = [c["id"] for c in cells if c["label"] == "basophil"]
    assert view.progress.startswith(f"**{len(basophils)} of {slide.cells} verified**")
    diff = table(view.differential)
    assert diff["basophil"]["verified"] == len(basophils) - 1
    assert diff["basophil"]["agreement"] == f"{len(basophils) - 1}/{len(basophils)} ({100 * (len(basophils) - 1) / len(basophils):.0f} %)"
    captions = [item["caption"] for item in view.gallery]
    assert sum("→ lymphocyte" in c for c in captions) == 1 and sum("✓" in c for c in captions) == len(basophils) - 1
    # In the database: append-only reviews, the model's label kept.
    stored = working_db(app, slide.zip)
    assert reviews_in(stored)[0] == (first["id"], "lymphocyte", "A. Smith", "")
    assert {r[0] for r in reviews_in(stored)} == set(basophils)
    assert next(c for c in cells_of(stored) if c["id"] == first["id"])["label"] == "basophil"
    # Confirming the same page again writes nothing: every cell on it has its review.
    client.predict(db, "basophil", 1, "B. Jones", api_name="/review_confirm")
    assert len(reviews_in(stored)) == len(basophils)


def test_smudge_is_not_counted_and_other_needs_a_note(app, client, slide):
    db = open_zip(client, slide).db
    cells = cells_of(slide.db)
    out = named((*VIEW, *CELL, "note"), client.predict(db, cells[0]["id"], "smudge", "", "A. Smith", api_name="/review_set"))
    diff = table(out.differential)
    assert diff["smudge"]["verified"] == 1 and diff["smudge"]["verified %"] == "not counted"
    assert diff["total"]["verified"] == 0
    with pytest.raises(AppError, match="Type what the cell is under Note"):
        client.predict(db, cells[1]["id"], "other", "", "A. Smith", api_name="/review_set")
    client.predict(db, cells[1]["id"], "other", "megakaryocyte fragment", "A. Smith", api_name="/review_set")
    assert reviews_in(working_db(app, slide.zip))[1][1:] == ("other", "A. Smith", "megakaryocyte fragment")


@pytest.mark.parametrize("reviewer", ["", "   "])
def test_an_empty_reviewer_is_refused_and_nothing_written(app, client, slide, reviewer):
    db = open_zip(client, slide).db
    cell = cells_of(slide.db)[0]
    with pytest.raises(AppError, match="Enter your name under Reviewer"):
        client.predict(db, cell["id"], cell["label"], "", reviewer, api_name="/review_set")
    with pytest.raises(AppError, match="Enter your name under Reviewer"):
        client.predict(db, cell["label"], 1, reviewer, api_name="/review_confirm")
    assert reviews_in(working_db(app, slide.zip)) == []


def test_an_unknown_cell_or_label_is_refused(app, client, slide):
    db = open_zip(client, slide).db
    with pytest.raises(AppError, match="No cell 9999 in slide.sqlite; pick a cell in the gallery"):
        client.predict(db, 9999, "basophil", "", "A. Smith", api_name="/review_set")
    with pytest.raises(AppError, match="unknown label 'neutrophill'"):
        client.predict(db, 1, "neutrophill", "", "A. Smith", api_name="/review_set")
    with pytest.raises(AppError, match="cell id 'first' is not a cell number"):
        client.predict(db, "first", "basophil", "", "A. Smith", api_name="/review_set")
    assert reviews_in(working_db(app, slide.zip)) == []


def test_the_reviews_csv_has_every_cell_and_its_review(client, slide, tmp_path):
    db = open_zip(client, slide).db
    cell = cells_of(slide.db)[2]
    client.predict(db, cell["id"], "monocyte", "=1+1", "A. Smith", api_name="/review_set")
    path = client.predict(db, api_name="/review_export")
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    assert len(rows) == slide.cells
    row = next(r for r in rows if r["cell_id"] == str(cell["id"]))
    assert (row["label"], row["reviewer"], row["note"], row["model_label"]) == ("monocyte", "A. Smith", "'=1+1", cell["label"])


def test_the_verified_cells_download_as_a_labelled_folder(client, slide, tmp_path):
    db = open_zip(client, slide).db
    with pytest.raises(AppError, match="No cell has a verified label of one of the model's classes yet"):
        client.predict(db, api_name="/review_export_cells")
    first, second = cells_of(slide.db)[:2]
    client.predict(db, first["id"], "monocyte", "", "A. Smith", api_name="/review_set")
    client.predict(db, second["id"], "smudge", "", "A. Smith", api_name="/review_set")
    path = client.predict(db, api_name="/review_export_cells")
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if not n.endswith("/"))  # files; folders have entries of their own
        rows = list(csv.DictReader(io.TextIOWrapper(zf.open("labels.csv"), encoding="utf-8")))
    assert names == ["labels.csv", f"monocyte/cell-{first['id']:07d}.jpg"]  # the smudge is not a cell type
    assert [(r["file"], r["label"], r["model_label"], r["reviewer"]) for r in rows] == [
        (f"monocyte/cell-{first['id']:07d}.jpg", "monocyte", first["label"], "A. Smith")]


def test_a_database_uploaded_without_its_crops_says_to_upload_the_folder(client, slide):
    opened = named(OPENED, client.predict(handle_file(slide.db), api_name="/review_open"))  # the .sqlite alone
    client.predict(opened.db, opened.cell_id, "monocyte", "", "A. Smith", api_name="/review_set")
    with pytest.raises(AppError, match=r"Upload a .zip of the station folder \(the database with its crops folder\)"):
        client.predict(opened.db, api_name="/review_export_cells")


def test_a_second_session_sees_the_same_reviews(client, url, slide):
    db = open_zip(client, slide).db
    cell = cells_of(slide.db)[0]
    client.predict(db, cell["id"], "lymphocyte", "", "A. Smith", api_name="/review_set")
    other = open_zip(Client(url, verbose=False), slide)  # another technologist uploads the same file
    assert other.progress.startswith(f"**1 of {slide.cells} verified**") and "A. Smith" in other.progress
    assert table(other.differential)["lymphocyte"]["verified"] == 1


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_a_file_that_is_not_a_station_database_is_refused(client, tmp_path, kind):
    make, _, message = BAD_FILES[kind]
    path = tmp_path / "x.sqlite"
    make(path)
    with pytest.raises(AppError, match=message) as info:
        client.predict(handle_file(path), api_name="/review_open")
    assert "upload the station's database" in str(info.value) and "/tmp" not in str(info.value)


@pytest.mark.parametrize("content, message", [
    ({"notes.txt": b"no database here"}, "no station database in the upload"),
    ({"a/one.sqlite": None, "b/two.sqlite": None}, "2 databases"),
    ({"../escape.sqlite": b"x"}, "unsafe path"),
    (b"PK\x03\x04 not really a zip", "not a readable zip"),
])
def test_a_bad_zip_is_refused(client, slide, tmp_path, content, message):
    path = tmp_path / f"{uuid.uuid4().hex}.zip"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in content.items():
                zf.writestr(name, slide.db.read_bytes() if data is None else data)
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(path), api_name="/review_open")


def test_a_database_alone_opens_and_says_where_the_crops_are(client, slide, tmp_path):
    bare = tmp_path / "bare.sqlite"
    shutil.copyfile(slide.db, bare)
    opened = named(OPENED, client.predict(handle_file(bare), api_name="/review_open"))
    db = opened.db
    assert opened.progress.startswith(f"**0 of {slide.cells} verified**")
    assert "upload a .zip of the station folder" in opened.info
    with pytest.raises(AppError, match="crop is not beside the database"):
        client.predict(db, opened.cell_id, api_name="/review_cam")


def test_a_database_of_a_model_the_app_lacks_says_so(client, tmp_path):
    """Reviews work on any station database; Grad-CAM and adapt need the model that classified it."""
    from tests.test_review import make_db

    make_db(tmp_path / "other" / "station.sqlite", ["neutrophil", "lymphocyte"], sha="b" * 64)  # a model the app lacks
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in (tmp_path / "other").rglob("*"):
            zf.write(f, f.relative_to(tmp_path))
    opened = named(OPENED, client.predict(handle_file(archive), api_name="/review_open"))
    client.predict(opened.db, opened.cell_id, "lymphocyte", "", "A. Smith", api_name="/review_set")
    for endpoint, args in (("/review_cam", (opened.cell_id,)), ("/review_adapt", ("wbc-lab",))):
        with pytest.raises(AppError, match="which the app does not have"):
            client.predict(opened.db, *args, api_name=endpoint)


def test_requests_without_an_open_database_say_what_to_do(client):
    for endpoint, args in (("/review_cell", (1,)), ("/review_export", ()), ("/review_export_cells", ()), ("/review_cam", (1,))):
        with pytest.raises(AppError, match="Open a station database first"):
            client.predict("", *args, api_name=endpoint)
    for forged in ("upload/../../../etc/passwd", "/etc/passwd", "upload/nothing-here/x.sqlite"):
        with pytest.raises(AppError, match="names no open station database"):
            client.predict(forged, api_name="/review_export")
    with pytest.raises(AppError, match="started without a station database"):
        client.predict("server", api_name="/review_export")
    with pytest.raises(AppError, match="--review-db"):
        client.predict(None, api_name="/review_open")  # no upload, and the app was started without one


def test_the_review_api_is_stateless(client, url, slide):
    """A database id from /review_open works from another client (curl, an agent): no session state needed."""
    db = open_zip(client, slide).db
    cell = cells_of(slide.db)[0]
    other = Client(url, verbose=False)
    out = named((*VIEW, *CELL, "note"), other.predict(db, cell["id"], "lymphocyte", "", "A. Smith", api_name="/review_set"))
    assert out.progress.startswith(f"**1 of {slide.cells} verified**")


# --------------------------------------------------------------------------- python app.py --review-db, adapt


def copy_product_models(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in models_dir().iterdir():
        if f.name.split(".")[0] in ("wbc", "all") and f.suffix != ".keras" and f.is_file():
            shutil.copyfile(f, dest / f.name)
    return dest


def test_review_db_and_adapt_add_a_lab_model_to_the_choices(app, tmp_path):
    """`python app.py --review-db DB` reviews the station's own database in place; "Adapt model from verified cells"
    writes <model>-lab into the models folder with its cross-validated before/after accuracy, and the adapted model is
    then one of the model choices of a new API client, and classifies."""
    models = copy_product_models(tmp_path / "models")
    slide = make_slide(app.MODELS["wbc"], tmp_path)
    env = dict(os.environ, HEMATOVISION_MODELS=str(models), HF_HUB_OFFLINE="1")
    with app_process("--review-db", str(slide.db), env=env) as (url, _):
        client = Client(url, verbose=False)
        opened = named(OPENED, client.predict(None, api_name="/review_open"))
        db = opened.db
        assert db == "server"
        assert "the app's station database" in opened.source and opened.adapt_name == "wbc-lab"
        for _, label in opened.klass["choices"]:
            client.predict(db, label, 1, "A. Smith", api_name="/review_confirm")
        assert len(reviews_in(slide.db)) == slide.cells  # written in place, into the station's database
        with pytest.raises(AppError, match="already has"):
            client.predict(db, "wbc", api_name="/review_adapt")
        summary, *radios = client.predict(db, "wbc-lab", api_name="/review_adapt")
        assert "| accuracy |" in summary and "before" in summary and "after" in summary
        assert all("wbc-lab" in [v for _, v in r["choices"]] for r in radios)
        assert (models / "wbc-lab.json").exists() and not (ROOT / "models" / "wbc-lab.json").exists()
        fresh = Client(url, verbose=False)
        named_endpoints = fresh.view_api(return_format="dict", print_info=False)["named_endpoints"]
        enum = named_endpoints["/classify"]["parameters"][1]["type"]["enum"]
        assert enum[:2] == ["wbc", "all"] and "wbc-lab" in enum
        _, _, result = fresh.predict(handle_file(WBC_FILES[0]), "wbc-lab", api_name="/classify")
        assert result["model"] == "wbc-lab" and result["label"] in app.MODELS["wbc"].labels
        rows, *_ = fresh.predict([handle_file(WBC_FILES[0])], "wbc-lab", api_name="/batch")
        assert rows["data"][0][1] == result["label"]

        # "Count only this lab's classes": a scoped copy of the database's model (hematovision/scope.py)
        assert [v for _, v in opened.scope_classes["choices"]] == list(app.MODELS["wbc"].labels)
        five = ["neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil"]
        for classes, name, message in ((["neutrophil"], "wbc-5part", "at least two classes"),
                                       (five, "wbc-lab", "already has"), (five, "../x", "not a usable model name")):
            with pytest.raises(AppError, match=message):
                client.predict(db, classes, name, api_name="/review_scope")
        assert not (models / "wbc-5part.json").exists()
        summary, *radios = client.predict(db, five, "wbc-5part", api_name="/review_scope")
        assert "names only basophil, eosinophil, lymphocyte, monocyte, neutrophil" in summary
        assert "erythroblast or ig or platelet is flagged" in summary
        assert all("wbc-5part" in [v for _, v in r["choices"]] for r in radios)
        again, *_ = client.predict(db, five[:2], "wbc-5part", api_name="/review_scope")  # a lab changes its scope
        assert again.startswith("Replaced the earlier wbc-5part") and "names only lymphocyte, neutrophil" in again
        ig = next(f for f in sorted((EXAMPLES / "wbc").glob("ig__*.jpg")))
        _, _, result = Client(url, verbose=False).predict(handle_file(ig), "wbc-5part", api_name="/classify")
        assert result["label"] in five[:2] and result["uncertain"] is True and result["outside_scope"] is not None


# --------------------------------------------------------------------------- the Batch tab's batch


def test_review_this_batch_opens_it_and_its_reviews_export(app, client):
    """/batch also writes the batch as a station session; /review_batch opens it as /review_open opens an upload."""
    from hematovision.station.log import StationLog

    files = sorted((EXAMPLES / "wbc").glob("*.jpg"))[:3]
    table_, *_ = client.predict([handle_file(f) for f in files], "wbc", api_name="/batch")
    batch_rows = {row[0]: row for row in table_["data"]}
    opened = named(OPENED, client.predict(api_name="/review_batch"))
    assert opened.db.startswith("upload/batch-") and "3 cells" in opened.source and "batch" in opened.source
    assert opened.progress.startswith("**0 of 3 verified**")
    db_path = app.UPLOAD_DIR / "hematovision-review" / opened.db.removeprefix("upload/")
    with StationLog(db_path, create=False) as log:
        (session,) = log.sessions()
        cells = list(log.cells())
    assert session.source == "batch upload" and session.model_name == "wbc" and session.labels == app.MODELS["wbc"].labels
    assert [c["source_frame"] for c in cells] == [f.name for f in files]
    for c in cells:  # the model's label and confidence as /batch gave them; the image saved as the crop
        assert (c["label"], f"{c['confidence']:.4f}") == tuple(batch_rows[c["source_frame"]][1:3])
        assert (db_path.parent / c["crop_path"]).is_file()
    assert opened.cell_id in {c["id"] for c in cells} and opened.cell is not None

    cell = cells[1]
    out = named((*VIEW, *CELL, "note"), client.predict(opened.db, cell["id"], "basophil", "", "A. Smith",
                                                      api_name="/review_set"))
    assert out.progress.startswith("**1 of 3 verified**")
    assert reviews_in(db_path) == [(cell["id"], "basophil", "A. Smith", "")]
    path = client.predict(opened.db, api_name="/review_export")
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    assert len(rows) == 3
    row = next(r for r in rows if r["cell_id"] == str(cell["id"]))
    assert (row["label"], row["reviewer"], row["model_label"]) == ("basophil", "A. Smith", cell["label"])


def test_review_this_batch_before_any_batch_says_what_to_do(url):
    with pytest.raises(AppError, match="No batch to review: classify images in the Batch tab first"):
        Client(url, verbose=False).predict(api_name="/review_batch")  # a fresh session: it has run no batch


@pytest.mark.parametrize("counted, classes", [
    (None, ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]),
    (("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"),
     ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]),
])
def test_the_review_differential_lists_the_classes_the_session_counts(tmp_path, counted, classes):
    """A scoped model's slide (a five-part lab) has no rows for classes it never names; an unscoped one has all."""
    from hematovision.station.log import StationLog
    from hematovision.web.review_view import differential_table, read_slide
    from tests.test_review import make_db

    path = tmp_path / "station.sqlite"
    make_db(path, ["neutrophil", "neutrophil", "lymphocyte"], counted=counted)
    with StationLog(path, create=False) as db:
        table = differential_table(db, read_slide(db, path))
    assert list(table["class"]) == classes + ["total"]
