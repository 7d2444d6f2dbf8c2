"""What the Review tab shows of a station database: class pages (flagged cells first), a cell's details, the
progress, and the pre-classification beside the verified differential. Reads only, through hematovision.station.review."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from ..batch_shift import check_batch
from ..errors import HematoVisionError
from ..images import load_image
from ..station.review import allowed_labels, cell_reviews, history, verified_count
from .errors import refusal
from .inputs import cell_number, page_number, shown
from .review_db import crop_file, is_upload
from .style import REVIEW_KEYS

#: Cells per gallery page; "Confirm page" verifies the unverified ones among them.
PAGE_SIZE = 24
THUMB_SIDE = 128
DIFFERENTIAL_COLUMNS = ["class", "pre-classified", "pre %", "verified", "verified %", "agreement"]


@dataclass(frozen=True)
class Slide:
    """One read of a station database: its cells with their latest reviews, and the labels of its sessions."""

    db_path: str
    rows: list
    labels: tuple[str, ...]
    model_name: str
    model_sha256: str
    counted: tuple[str, ...] = ()  # the classes its differential lists (a lab scope's, or every label)


def read_slide(db, db_path) -> Slide:
    sessions = db.sessions()
    if not sessions:
        raise refusal(f"{db.path.name}: a station database without sessions: run the station first.", where="review")
    labels = tuple(dict.fromkeys(label for s in sessions for label in s.labels))
    counted = tuple(dict.fromkeys(label for s in sessions for label in s.differential_labels))
    last = sessions[-1]
    return Slide(str(db_path), cell_reviews(db), labels, last.model_name, last.model_sha256, counted)


def flagged(cell) -> bool:
    return bool(cell["uncertain"] or cell["out_of_distribution"])


def class_rows(slide, label):
    """The cells the model put in ``label``: uncertain and out-of-distribution ones first, then least confident."""
    rows = [r for r in slide.rows if r.cell["label"] == label]
    return sorted(rows, key=lambda r: (not flagged(r.cell), r.cell["confidence"], r.cell["id"]))


def page_count(slide, label) -> int:
    return max(1, -(-len(class_rows(slide, label)) // PAGE_SIZE))


def page_rows(slide, label, page):
    """The rows of a page of ``label`` (a page past the last shows the last page) and that page's number."""
    page = min(page_number(page), page_count(slide, label))
    return class_rows(slide, label)[(page - 1) * PAGE_SIZE:page * PAGE_SIZE], page


def page_of(slide, cell_id):
    """(class, page) where a cell is shown."""
    cell = next(r.cell for r in slide.rows if r.cell["id"] == cell_id)
    ids = [r.cell["id"] for r in class_rows(slide, cell["label"])]
    return cell["label"], ids.index(cell_id) // PAGE_SIZE + 1


def checked_class(slide, name):
    """The class page a request names: one of the slide's model's classes with cells (none named: the first)."""
    with_cells = [value for _, value in class_choices(slide)]
    if name is None or (isinstance(name, str) and not name.strip()):
        return with_cells[0] if with_cells else None
    if not isinstance(name, str) or name.strip() not in slide.labels:
        raise refusal(f"{shown(name)} is not a class of this slide's model (choose one of {', '.join(slide.labels)}).",
                      where="review")
    if name.strip() not in with_cells:
        raise refusal(f"No cell of this slide is in class {name.strip()!r}; choose a class page with cells: "
                      f"{', '.join(with_cells)}.", where="review")
    return name.strip()


def find_cell(db, cell_id):
    """The cell ``cell_id`` names (a whole number); refused when it is not one, or the database has no such cell."""
    number = cell_number(cell_id)
    cell = db.cell(number) if 0 < number < 2**63 else None
    if cell is None:
        raise refusal(f"No cell {number} in {db.path.name}; pick a cell in the gallery.", where="review")
    return cell


def class_choices(slide):
    """(label, class) for each predicted class present: its cells, flagged and verified counts."""
    out = []
    for label in slide.labels:
        rows = [r for r in slide.rows if r.cell["label"] == label]
        if rows:
            done = sum(r.review is not None for r in rows)
            out.append((f"{label}: {len(rows)} cells, {sum(flagged(r.cell) for r in rows)} flagged, {done} verified", label))
    return out


def label_choices(slide):
    """The reviewer's labels: the model's classes, then smudge, artefact, unidentified, other; each with its key."""
    labels = allowed_labels(slide.labels)
    keys = REVIEW_KEYS + " " * max(0, len(labels) - len(REVIEW_KEYS))
    return [(f"{key.strip()} · {label}" if key.strip() else label, label) for key, label in zip(keys, labels)]


def thumbnail(db_path, cell):
    crop = crop_file(db_path, cell)
    if crop is not None:
        try:
            rgb = load_image(crop)
        except HematoVisionError:
            crop = None
    if crop is None:
        return np.full((THUMB_SIDE, THUMB_SIDE, 3), 200, np.uint8)
    scale = THUMB_SIDE / max(rgb.shape[:2])
    return cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA) if scale < 1 else rgb


def caption(row) -> str:
    """``#id``, ⚠ when flagged, then the model's confidence (not reviewed), ✓ (confirmed) or → the verified label."""
    c, r = row.cell, row.review
    text = f"#{c['id']}" + (" ⚠" if flagged(c) else "")
    if r is None:
        return f"{text} {100 * c['confidence']:.0f}%"
    return text + (" ✓" if r.label == c["label"] else f" → {r.label}")


def gallery(slide, rows):
    return [(thumbnail(slide.db_path, r.cell), caption(r)) for r in rows]


def progress(slide) -> str:
    total, done = len(slide.rows), sum(r.review is not None for r in slide.rows)
    flags = [r for r in slide.rows if flagged(r.cell)]
    reviewers = sorted({r.review.reviewer for r in slide.rows if r.review is not None})
    shift = check_batch([r.cell["out_of_distribution"] for r in slide.rows], atypical=[r.cell["atypical"] for r in slide.rows])
    return ((f"**Warning:** {shift.message()}\n\n" if shift.shifted else "")
            + f"**{done} of {total} verified**"
            + (f" · flagged (uncertain or out of distribution): {sum(r.review is not None for r in flags)} of "
               f"{len(flags)} verified" if flags else "")
            + (f" · reviewers: {html.escape(', '.join(reviewers))}" if reviewers else ""))


def _agreement(pair):
    if not pair:
        return "-"
    agreed, reviewed = pair
    return f"{agreed}/{reviewed} ({100 * agreed / reviewed:.0f} %)"


def differential_table(db, slide) -> pd.DataFrame:
    """Per class: the model's count and percent over every cell, the verified count and percent over the reviewed
    cells, and the agreement (reviewed cells the model put in the class that the reviewer confirmed)."""
    pre = db.differential(None, labels=slide.counted or slide.labels)
    ver = verified_count(db, None, slide.counted or slide.labels)
    pre_pct, ver_pct = pre.percentages(), ver.differential.percentages()
    rows = [(label, pre.counts.get(label, 0), f"{pre_pct.get(label, 0.0):.1f}", ver.differential.counts.get(label, 0),
             f"{ver_pct.get(label, 0.0):.1f}", _agreement(ver.agreement.get(label))) for label in ver.differential.labels]
    rows += [(label, "", "", n, "not counted", "") for label, n in sorted(ver.differential.excluded.items())]
    agreed = sum(a for a, _ in ver.agreement.values())
    reviewed = sum(n for _, n in ver.agreement.values())
    rows.append(("total", pre.total, "100.0" if pre.total else "", ver.differential.total,
                 "100.0" if ver.differential.total else "", _agreement((agreed, reviewed)) if reviewed else "-"))
    return pd.DataFrame(rows, columns=DIFFERENTIAL_COLUMNS)


def cell_detail(db, db_path, cell_id):
    """(crop, top-3 probabilities, Markdown facts, verified label) of one cell."""
    cell = find_cell(db, cell_id)
    crop = crop_file(db_path, cell)
    image = load_image(crop) if crop is not None else None
    reviews = history(db, cell["id"])
    facts = [f"**Cell #{cell['id']}** · session {cell['session_id']} · frame `{cell['source_frame']}`",
             f"Model ({cell['model_name']}): **{cell['label']}** at {100 * cell['confidence']:.0f} %"
             + (" · uncertain" if cell["uncertain"] else "") + (" · out of distribution" if cell["out_of_distribution"] else "")]
    if reviews:
        last = reviews[-1]
        facts.append(f"Verified: **{html.escape(last.label)}** by {html.escape(last.reviewer)} at {last.time}"
                     + (f" ({html.escape(last.note)})" if last.note else "") + (f" · {len(reviews)} reviews" if len(reviews) > 1 else ""))
    else:
        facts.append("Not verified yet: choose its label (or press the label's key).")
    if image is None:
        facts.append("The crop is not beside this database" + (" (upload a .zip of the station folder to see it)."
                                                               if is_upload(db_path) else "."))
    probabilities = json.loads(cell["probabilities"]) if cell["probabilities"] else {}
    return image, probabilities, "\n\n".join(facts), reviews[-1].label if reviews else None, cell


def next_unverified(slide, page_ids, cell_id):
    """The next cell of the page without a review, after ``cell_id`` and then from the top (else ``cell_id``)."""
    verified = {r.cell["id"] for r in slide.rows if r.review is not None}
    at = page_ids.index(cell_id) + 1 if cell_id in page_ids else 0
    return next((i for i in page_ids[at:] + page_ids[:at] if i not in verified), cell_id)
