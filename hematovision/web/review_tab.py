"""The Review tab: a technologist confirms or corrects every cell of a station database.

Class pages of cell crops (the model's label; uncertain and out-of-distribution
cells first), a cell's top 3 and Grad-CAM on demand, one click (or one key) to
record a label, one action to confirm the rest of a page, the progress, the
pre-classification beside the verified differential, the reviews as CSV, and
the model adapted from the verified cells. Every handler returns a
``{component: value}`` dict; the logic lives in review_db, review_view and
review_actions. Research use only: the verified differential is the
reviewer's, and HematoVision is not a diagnostic device.
"""

from contextlib import contextmanager
from types import SimpleNamespace

import gradio as gr

from .errors import user_errors
from .inputs import page_number
from . import review_lab
from .review_actions import cell_cam, confirm_page, export_cells_zip, export_csv, set_label, suggested_name
from .review_db import (UPLOAD_TYPES, batch_database, configured_db, database_id, open_database, resolve_database,
                        station)
from .review_view import (DIFFERENTIAL_COLUMNS, cell_detail, checked_class, class_choices, differential_table, gallery,
                          label_choices, next_unverified, page_count, page_of, page_rows, progress, read_slide)
from .style import REVIEW_KEYS

NOTICE = ("<div class='hv-notice' role='note'><b>Research use only.</b> The verified differential is the reviewer's: "
          "HematoVision pre-classifies, a qualified technologist confirms or corrects every cell. It is not a diagnostic "
          "device.</div>")
WAITING = "Open a station database to review its cells."
ui = SimpleNamespace()  # the tab's components, set by build()


def _slide_view(db, slide, label=None, page=1):
    """The parts that show the whole slide: progress, class pages, the gallery of one page, the differentials.
    ``label`` and ``page`` as sent: checked (none: the first class, page 1; a page past the last: the last)."""
    choices, label = class_choices(slide), checked_class(slide, label)
    rows, page = page_rows(slide, label, page) if label else ([], 1)
    pages = page_count(slide, label) if label else 1
    return {ui.progress: progress(slide), ui.klass: gr.Dropdown(choices=choices, value=label),
            ui.page: gr.Number(value=page, label=f"Page (of {pages})"), ui.gallery: gallery(slide, rows),
            ui.page_ids: [r.cell["id"] for r in rows], ui.differential: differential_table(db, slide)}


def _cell_view(db, slide, cell_id, **label):
    """The selected cell's parts; ``label``: more properties of the label choice (its choices, at open)."""
    if cell_id is None:
        return {ui.cell_id: None, ui.cell_image: None, ui.top3: None, ui.info: "Pick a cell in the gallery.",
                ui.label: gr.Radio(value=None, **label)}
    image, probabilities, facts, verified, cell = cell_detail(db, slide.db_path, cell_id)
    return {ui.cell_id: cell["id"], ui.cell_image: image, ui.top3: probabilities, ui.info: facts,
            ui.label: gr.Radio(value=verified, **label)}


# --------------------------------------------------------------------------- handlers (named endpoints)
# Stateless: every call names its database with the id /review_open returned (gradio_client, curl and MCP alike).

@contextmanager
def _opened(database):
    """The station database ``database`` names, opened for this request, and one read of its cells."""
    path = resolve_database(database)
    with station(path) as db:
        yield db, read_slide(db, path)


@user_errors
def review_open(upload):
    """Open a station database for review (research use only): an uploaded .sqlite or .zip of the station folder
    with its crops, or, with no file, the database the app was started with (--review-db).

    Args:
        upload: the station database (.sqlite) or a .zip of the station folder; none: the app's own database.

    Returns:
        The database id (pass it to the other review endpoints), what was opened, the adapted model's default
        name, the model's classes (for /review_scope), the progress, the class pages, the first page's cells, the differentials and the first cell.
    """
    path = open_database(upload)
    return _opened_view(path, " (the app's station database)" if upload is None else
                        " (the app's working copy of your upload: download the reviews CSV to keep them)")


@user_errors
def review_batch(request: gr.Request = None):
    """Open the latest batch of the Batch tab (this session's /batch) for review, as /review_open opens a database:
    each classified file is a cell, its image the crop. Research use only.

    Returns:
        What /review_open returns (the database id first: pass it to the other review endpoints).
    """
    path = batch_database(getattr(request, "session_hash", None))
    return _opened_view(path, " (the Batch tab's latest batch: download the reviews CSV to keep them)")


def _opened_view(path, where):
    """The outputs of opening the station database at ``path``; ``where``: what it is, after its summary."""
    with station(path) as db:
        slide = read_slide(db, path)
        view = _slide_view(db, slide)
        first = view[ui.page_ids][0] if view[ui.page_ids] else None
        cell = _cell_view(db, slide, first, choices=label_choices(slide))
    source = f"**{path.name}**: {len(slide.rows)} cells, model `{slide.model_name}`" + where
    return {ui.db: database_id(path), ui.source: source, ui.adapt_name: suggested_name(slide),
            ui.scope_classes: gr.CheckboxGroup(choices=list(slide.labels), value=[]), **view, **cell}


@user_errors
def review_page(database, class_name, page):
    """One page of a class: the cells the model put in it, flagged (uncertain, out of distribution) first.

    Args:
        database: the database id from /review_open.
        class_name: the model's label whose cells are shown.
        page: the page number, from 1.
    """
    with _opened(database) as (db, slide):
        view = _slide_view(db, slide, class_name, page)
        first = view[ui.page_ids][0] if view[ui.page_ids] else None
        return {**view, **_cell_view(db, slide, first)}


@user_errors
def review_cell(database, cell_id):
    """One cell of the open database: its crop, the model's top 3, its flags and its reviews.

    Args:
        database: the database id from /review_open.
        cell_id: the cell's id (shown in the gallery as #id).
    """
    with _opened(database) as (db, slide):
        return _cell_view(db, slide, cell_id)


@user_errors
def review_cam(database, cell_id):
    """Grad-CAM of a cell's saved crop by the model that classified it: where it looked, not that it is right.

    Args:
        database: the database id from /review_open.
        cell_id: the cell's id.
    """
    with _opened(database) as (db, slide):
        overlay, label = cell_cam(db, slide, cell_id)
    return {ui.cell_image: overlay, ui.info: f"Grad-CAM of **{label}** on the saved crop (red: what drove it most)."}


@user_errors
def review_set(database, cell_id, label, note, reviewer, class_name=None, page=None):
    """Record the verified label of one cell (append-only: the model's label is kept; the latest review wins),
    then show the next unverified cell of the page.

    Args:
        database: the database id from /review_open.
        cell_id: the cell's id.
        label: one of the model's classes, or smudge, artefact, unidentified, other (other needs a note).
        note: free text kept with the review.
        reviewer: who reviewed the cell (required).
        class_name: the class page shown afterwards (default: the cell's).
        page: its page number (default: the cell's page).
    """
    with _opened(database) as (db, slide):
        shown = checked_class(slide, class_name), page_number(page)  # every input checked before the review is written
        review = set_label(db, cell_id, label, note, reviewer)
        slide = read_slide(db, db.path)
        view = _slide_view(db, slide, *(shown if str(class_name or "").strip() else page_of(slide, review.cell_id)))
        following = next_unverified(slide, view[ui.page_ids], review.cell_id)
        return {**view, **_cell_view(db, slide, following), ui.note: ""}


@user_errors
def review_confirm(database, class_name, page, reviewer):
    """Confirm a whole class page in one action: every unverified cell on it gets the model's label as its
    verified label (cells already reviewed keep their review). One transaction: all or none.

    Args:
        database: the database id from /review_open.
        class_name: the class page's label.
        page: the page number, from 1.
        reviewer: who reviewed the cells (required).
    """
    with _opened(database) as (db, slide):
        confirmed = confirm_page(db, slide, class_name, page, reviewer)
        gr.Info(f"{confirmed} cell(s) confirmed as {class_name}.", duration=3)
        return _slide_view(db, read_slide(db, db.path), class_name, page)


@user_errors
def review_export(database):
    """Every cell with its latest review as CSV (re-importable with `python -m hematovision review --import`).

    Args:
        database: the database id from /review_open.
    """
    with _opened(database) as (db, _):
        return {ui.csv: export_csv(db)}


@user_errors
def review_export_cells(database):
    """The verified cells as a zipped labelled folder (<label>/cell-<id>.jpg + labels.csv), as `review --export-cells`.

    Args:
        database: the database id from /review_open.
    """
    with _opened(database) as (db, _):
        return {ui.cells_zip: export_cells_zip(db)}


# --------------------------------------------------------------------------- UI-only steps


@user_errors
def select_cell(database, page_ids, evt: gr.SelectData):
    return review_cell(database, page_ids[evt.index])


@user_errors
def step_cell(database, page_ids, cell_id, delta):
    if not page_ids:
        return {}
    at = page_ids.index(cell_id) if cell_id in page_ids else -delta
    return review_cell(database, page_ids[min(max(at + delta, 0), len(page_ids) - 1)])


def server_note():
    path = configured_db()
    return gr.Button(visible=path is not None, value=f"Open {path.name}" if path else "Open")


# --------------------------------------------------------------------------- layout


def _layout():
    gr.HTML(NOTICE)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=280):
            ui.upload = gr.File(label="Station database (.sqlite, or a .zip of the station folder with its crops)",
                                file_types=UPLOAD_TYPES, type="filepath", elem_id="review-upload")
            ui.open_server = gr.Button("Open", size="sm", visible=False, elem_id="review-open-server")
        with gr.Column(scale=3, min_width=280):
            ui.reviewer = gr.Textbox(label="Reviewer", placeholder="Your name, recorded with every review",
                                     elem_id="review-reviewer")
            ui.progress = gr.Markdown(WAITING, elem_id="review-progress")
            ui.source = gr.Markdown()
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=280):
            with gr.Row():
                ui.klass = gr.Dropdown([], label="Class page (the model's label)", allow_custom_value=True, scale=3,
                                       elem_id="review-class")
                ui.page = gr.Number(1, precision=0, minimum=1, label="Page", scale=1, min_width=90, elem_id="review-page")
            gr.Markdown("Flagged cells first. ⚠ uncertain or out of distribution · ✓ confirmed · → corrected",
                        elem_classes="hv-legend")
            ui.gallery = gr.Gallery(label="Cells of the page", show_label=False, buttons=[], columns=4, fit_columns=False,
                                    height="auto", allow_preview=False, object_fit="contain", format="jpeg", elem_id="review-gallery")
            ui.confirm = gr.Button("Confirm the unverified cells of this page", variant="primary", elem_id="review-confirm")
        with gr.Column(scale=2, min_width=280):
            ui.cell_image = gr.Image(label="Selected cell", interactive=False, height=240, format="png", elem_id="review-cell")
            ui.top3 = gr.Label(num_top_classes=3, label="Model's top 3", elem_id="review-top3")
            ui.info = gr.Markdown(elem_id="review-info")
            ui.label = gr.Radio([], label=f"Verified label: click it, or press its key ({REVIEW_KEYS[:4]}...)",
                                elem_id="review-label")
            ui.note = gr.Textbox(label="Note (required for 'other')", elem_id="review-note")
            with gr.Row():
                ui.prev = gr.Button("◀ Previous (b)", size="sm", elem_id="review-prev")
                ui.cam = gr.Button("Grad-CAM", size="sm", elem_id="review-cam")
                ui.next = gr.Button("Next (n) ▶", size="sm", elem_id="review-next")
            ui.cell_id = gr.Number(label="Cell id", precision=0, elem_id="review-cell-id")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=280):
            ui.differential = gr.Dataframe(headers=DIFFERENTIAL_COLUMNS, interactive=False, elem_id="review-differential",
                                           label="Pre-classification (every cell) vs verified (reviewed cells)")
        with gr.Column(scale=2, min_width=280):
            ui.export = gr.Button("Download reviews CSV", elem_id="review-export")
            ui.csv = gr.File(label="Reviews CSV", interactive=False, height=80, elem_id="review-csv")
            ui.export_cells = gr.Button("Download verified cells (.zip)", elem_id="review-export-cells")
            ui.cells_zip = gr.File(label="Verified cells", interactive=False, height=80, elem_id="review-cells-zip")
            review_lab.layout(ui)
    ui.db = gr.Textbox(visible=False, elem_id="review-db")  # the open database's id (from /review_open)
    # The cells of the page shown, in gallery order (for clicks on the gallery). Not a gr.State: a State keeps a
    # heartbeat connection open for every page, Classify users included.
    ui.page_ids = gr.JSON([], visible=False)


def _wire():
    view = [ui.progress, ui.klass, ui.page, ui.gallery, ui.page_ids, ui.differential]
    cell = [ui.cell_id, ui.cell_image, ui.top3, ui.info, ui.label]
    ui.opened = opened = [ui.db, ui.source, ui.adapt_name, ui.scope_classes, *view, *cell]
    ui.upload.upload(review_open, ui.upload, opened, api_name="review_open")
    ui.open_server.click(lambda: review_open(None), None, opened, api_visibility="private")
    # Raw values (preprocess=False) for the ids and pages: the handlers check them (Gradio would round 1.5 to 2).
    gr.on([ui.klass.input, ui.page.submit], review_page, [ui.db, ui.klass, ui.page], [*view, *cell], api_name="review_page",
          preprocess=False)
    ui.cell_id.submit(review_cell, [ui.db, ui.cell_id], cell, api_name="review_cell", preprocess=False)
    ui.gallery.select(select_cell, [ui.db, ui.page_ids], cell, api_visibility="private")
    ui.prev.click(lambda *a: step_cell(*a, -1), [ui.db, ui.page_ids, ui.cell_id], cell, api_visibility="private")
    ui.next.click(lambda *a: step_cell(*a, 1), [ui.db, ui.page_ids, ui.cell_id], cell, api_visibility="private")
    ui.cam.click(review_cam, [ui.db, ui.cell_id], [ui.cell_image, ui.info], api_name="review_cam", preprocess=False)
    # Raw values: the core checks the label against the cell's own model (a fresh API session has no choices yet).
    ui.label.input(review_set, [ui.db, ui.cell_id, ui.label, ui.note, ui.reviewer, ui.klass, ui.page],
                   [*view, *cell, ui.note], api_name="review_set", preprocess=False)
    ui.confirm.click(review_confirm, [ui.db, ui.klass, ui.page, ui.reviewer], view, api_name="review_confirm",
                     preprocess=False)
    ui.export.click(review_export, ui.db, ui.csv, api_name="review_export")
    ui.export_cells.click(review_export_cells, ui.db, ui.cells_zip, api_name="review_export_cells")


def build():
    """Lay out the tab (inside ``gr.Tab``) and wire its events (the adapt button: :func:`wire_models`)."""
    _layout()
    _wire()
    return ui


def wire_models(model_radios, on_models_changed):
    """The adapt button, once every tab exists: ``model_radios`` (the page's model choices) get the adapted model;
    ``on_models_changed`` is called first (app.py republishes the choices for new sessions and API clients)."""
    ui.model_radios, ui.on_models_changed = list(model_radios), on_models_changed
    review_lab.wire(ui)


def wire_batch(button, tabs):
    """The Batch tab's "Review this batch" ``button``: opens the batch here (/review_batch), then shows this tab."""
    button.click(review_batch, None, ui.opened, api_name="review_batch") \
        .success(lambda: gr.Tabs(selected="review"), None, tabs, api_visibility="private", queue=False)
