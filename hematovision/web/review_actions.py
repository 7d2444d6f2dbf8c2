"""What a reviewer does in the Review tab: record a label, confirm a page, export the reviews, Grad-CAM of a
cell, adapt the model from the verified cells. Writes go through hematovision.station.review (append-only reviews,
checked before anything is written); the adapted model goes into the app's models folder."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path

import gradio as gr

from .. import registry
from ..adapt import DEFAULT_L2
from ..commands.adapt import adapt_from_db
from ..images import load_image
from ..lab_model_files import MODEL_NAME, read_lab_model
from ..station.labelled_folder import CropsMissingError, NoVerifiedCellsError, export_labelled_folder
from ..station.review import ReviewInput, add_review, add_reviews, latest_reviews
from ..station.reviewcsv import write_reviews_csv
from .errors import refusal
from .files import output_file
from .imaging import DEFAULT_OPACITY, draw_overlay
from .models import STORE
from .review_db import crop_file, is_upload
from .review_view import checked_class, find_cell, page_rows

# One adaptation at a time: the name check and the write of the models folder must not interleave (with a queue
# concurrency above 1, two reviewers' adapts could both find a name free and the later one would replace the other's).
_ADAPTING = threading.Lock()

CROPS_NOT_UPLOADED = "Upload a .zip of the station folder (the database with its crops folder) to export the cells' images."
NO_REVIEWER = "Enter your name under Reviewer first: every review records who made it."


def reviewer_name(reviewer) -> str:
    name = str(reviewer or "").strip()
    if not name:
        raise refusal(NO_REVIEWER, where="review")
    return name


def set_label(db, cell_id, label, note, reviewer):
    """Record one verified label (its own transaction); returns the review. The label is checked by the core
    against the cell's own model (its classes, or smudge, artefact, unidentified, other)."""
    name = reviewer_name(reviewer)
    cell = find_cell(db, cell_id)["id"]
    label, note = str(label or "").strip(), str(note or "")
    if not label:
        raise refusal("Choose the cell's label.", where="review")
    if label == "other" and not note.strip():
        raise refusal("Type what the cell is under Note, then choose 'other'.", where="review")
    return add_review(db, cell_id=cell, label=label, reviewer=name, note=note)


def confirm_page(db, slide, label, page, reviewer) -> int:
    """Verify every unverified cell of the page as the model labelled it, in one transaction; returns how many."""
    name = reviewer_name(reviewer)
    if label is None or (isinstance(label, str) and not label.strip()):
        raise refusal(f"Choose a class page first (one of {', '.join(slide.labels)}).", where="review")
    rows, _ = page_rows(slide, checked_class(slide, label), page)
    todo = [ReviewInput(cell_id=r.cell["id"], label=r.cell["label"], reviewer=name) for r in rows if r.review is None]
    return len(add_reviews(db, todo)) if todo else 0


def export_csv(db) -> str:
    path = output_file(f"{db.path.stem}-reviews.csv")
    write_reviews_csv(db, path)
    return str(path)


def export_cells_zip(db) -> str:
    """The verified cells as a labelled folder (<label>/cell-<id>.jpg + labels.csv, the CLI's ``review
    --export-cells``: hematovision/station/labelled_folder.py), zipped for download."""
    path = output_file(f"{db.path.stem}-verified-cells.zip")
    with tempfile.TemporaryDirectory(prefix="hv-cells-") as tmp:
        try:
            result = export_labelled_folder(db, Path(tmp) / "cells")
        except NoVerifiedCellsError:
            raise refusal("No cell has a verified label of one of the model's classes yet; label cells first (smudge, "
                          "artefact, unidentified and other are not exported).", where="review") from None
        except CropsMissingError:
            raise refusal(CROPS_NOT_UPLOADED, where="review") from None
        if result.left_out:
            gr.Warning(f"{len(result.left_out)} verified cell(s) left out: their crop images are not in the upload. "
                       f"{CROPS_NOT_UPLOADED}")
        shutil.make_archive(str(path.with_suffix("")), "zip", result.folder)
    return str(path)


def model_of(slide):
    """The app's copy of the model that classified this database's latest session (same name and network)."""
    clf = STORE.models.get(slide.model_name)
    if clf is None or clf.spec.sha256 != slide.model_sha256:
        raise refusal(f"This database was classified by the model {slide.model_name!r} (sha256 {slide.model_sha256[:12]}...), "
                      f"which the app does not have; copy that model's files into {STORE.folder.name}/ and reload the page.",
                      where="review")
    return clf


def cell_cam(db, slide, cell_id):
    """The Grad-CAM overlay of a cell's saved crop, by the model that classified it, and what it shows."""
    cell = find_cell(db, cell_id)
    crop = crop_file(slide.db_path, cell)
    if crop is None:
        raise refusal(f"Cell #{cell['id']}: its crop is not beside the database, so there is nothing to explain.",
                      where="review")
    clf = model_of(slide)
    pred = clf.predict(crop, cam=True)
    if pred.cam is None:
        raise refusal(f"The {clf.spec.name} model has no CAM head; it cannot show where it looked.", where="review")
    return draw_overlay(load_image(crop), pred.cam, DEFAULT_OPACITY), pred.label


def taken_names() -> dict[str, str]:
    """Every model name in use, by its lower case: the app's models, the Hub's product models and the files of the
    models folder (names are compared ignoring case: WBC beside wbc is one name on some disks and confusing on all)."""
    names = [*STORE.names(), *registry.HUB_MODELS]
    if STORE.folder.is_dir():
        names += [f.name.split(".")[0] for f in STORE.folder.iterdir() if not f.name.startswith(".")]
    return {name.lower(): name for name in names}


def earlier_adaptation(name) -> dict | None:
    """The ``adaptation`` entry of the models folder's <name>.json, or None when it is not a lab adaptation."""
    data = read_lab_model(STORE.folder / f"{name}.json")
    return None if data is None else data["adaptation"]


def source_db(adaptation) -> str:
    """The station database an adaptation was made from (as ``adapt --db`` records it), or "" (a folder of cells)."""
    return str(adaptation.get("cells", {}).get("from_station_db", {}).get("db", ""))


def adaptation_facts(adaptation) -> tuple[str, str, int]:
    """(date, source database's file name or "", cells) of an earlier adaptation, as the messages show them."""
    date = str(adaptation.get("date", "unknown date")).replace("T", " ")[:16]
    source = source_db(adaptation)
    return date, Path(source).name if source else "", sum(adaptation.get("cells", {}).get("count_per_class", {}).values())


def new_model_name(name, default: str, *, example: str) -> tuple[str, str | None]:
    """The name given (else ``default``), checked as a model name; and the model that already has it (names compared
    ignoring case), or None."""
    name = str(name or "").strip() or default
    if not MODEL_NAME.fullmatch(name):
        raise refusal(f"{name[:40]!r} is not a usable model name: letters, digits, - and _ (e.g. {example}).", where="review")
    return name, taken_names().get(name.lower())


def name_taken(name, taken, suggestion: str):
    """The refusal for a name another model of the app has."""
    return refusal(f"{name} is the name of a model the app already has ({taken}; names are compared ignoring case); "
                   f"choose another name, e.g. {free_name(suggestion)}.", where="review")


def adapted_name(name, slide):
    """The adapted model's name, checked, and the earlier adaptation it replaces (None: a new name). An earlier
    adaptation is replaced only when it was made from this same station database (the lab re-adapting after more
    reviews); any other model of that name (ignoring case) is refused, so nothing saved is lost."""
    name, taken = new_model_name(name, f"{slide.model_name}-lab", example="wbc-lab")
    if taken is None:
        return name, None
    earlier = earlier_adaptation(name) if taken == name else None
    if earlier is None:
        raise name_taken(name, taken, f"{slide.model_name}-lab")
    date, source, cells = adaptation_facts(earlier)
    if Path(source_db(earlier)) != Path(slide.db_path).resolve():
        raise refusal(f"{name} already exists (adapted {date} from {source or 'a folder of cells'}, {cells} cells); "
                      f"choose another name, e.g. {free_name(name)}.", where="review")
    return name, earlier


def free_name(base) -> str:
    """``base``, or ``base-2``, ``base-3``... : the first name no model has."""
    taken = taken_names()
    return next(n for n in (base, *(f"{base}-{i}" for i in range(2, 10_000))) if n.lower() not in taken)


def suggested_name(slide) -> str:
    """The name box's suggestion: <model>-lab, unless that is another database's adaptation (then <model>-lab-2...)."""
    try:
        return adapted_name("", slide)[0]
    except gr.Error:
        return free_name(f"{slide.model_name}-lab")


def adapt_model(db, slide, name):
    """Adapt the session's model from the verified cells into the models folder; returns its name, the adapted JSON's
    data and the earlier adaptation it replaced (None if none). Adaptations run one at a time (``_ADAPTING``)."""
    with _ADAPTING:
        return _adapt_model(db, slide, name)


def _adapt_model(db, slide, name):
    source = model_of(slide)
    name, earlier = adapted_name(name, slide)
    if is_upload(slide.db_path):
        outside = [i for i, r in latest_reviews(db).items() if crop_file(slide.db_path, db.cell(i)) is None]
        if outside:
            raise refusal(f"{len(outside)} verified cell(s) have no crop inside the uploaded folder (e.g. cell {outside[0]}); "
                          "upload a .zip of the station folder with its crops.", where="review")
    path = adapt_from_db(str(source.spec.json_path), Path(slide.db_path), STORE.folder, name=name, l2=DEFAULT_L2,
                         session_ids=None)
    STORE.refresh()
    return name, json.loads(path.read_text(encoding="utf-8")), earlier


def adaptation_summary(name, data, earlier=None) -> str:
    """Before/after accuracy of the adaptation, cross-validated on the verified cells, and how to use the model;
    first, the earlier adaptation of this database it replaced."""
    adaptation = data["adaptation"]
    cv = adaptation["cross_validation"]
    before, after = cv["before"], cv["after"]
    counts = adaptation["cells"]["count_per_class"]
    left_out = adaptation["cells"].get("from_station_db", {}).get("left_out", [])
    lines = [f"**{name}** written to the models folder from {sum(counts.values())} verified cells "
             f"({', '.join(f'{k} {v}' for k, v in counts.items())}).", "",
             f"| {cv['folds']}-fold cross-validation on these cells | before | after |", "|---|---|---|",
             f"| accuracy | {before['accuracy']:.3f} | {after['accuracy']:.3f} |",
             f"| balanced accuracy | {before['balanced_accuracy']:.3f} | {after['balanced_accuracy']:.3f} |", "",
             f"Choose **{name}** under Model in Classify or Batch, or run the station with `--model {name}`. "
             "Compare before switching: a few cells give a noisy estimate. Research use only."]
    if earlier is not None:
        date, _, cells = adaptation_facts(earlier)
        lines[:0] = [f"Replaced the earlier {name} ({cells} cells, adapted {date}) made from this database.", ""]
    if left_out:
        lines += ["", "Left out: " + "; ".join(left_out)]
    return "\n".join(lines + label_check_lines(adaptation.get("label_check", {}).get("cells", [])))


def label_check_lines(cells, show: int = 10) -> list[str]:
    """The verified cells the cross-validation assigns to another class: look at them again before trusting the model."""
    if not cells:
        return []
    lines = ["", f"**Check these labels** ({len(cells)} verified cell(s) that a head fitted without them puts in another "
             "class; mislabelled, or not yet separable on this microscope):"]
    lines += [f"- {Path(c['file']).stem}: verified as {c['label']}, cross-validation says {c['predicted']} "
              f"(p {c['p_label']:.2f} for {c['label']})" for c in cells[:show]]
    return lines + ([f"- ... and {len(cells) - show} more (adaptation.label_check in the model's JSON)"] if len(cells) > show else [])
