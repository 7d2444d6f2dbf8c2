"""The technologist's review of a station's cells: verified labels, kept beside the model's, never over them.

A review is one row of the append-only ``reviews`` table of the station
database (cell id, verified label, reviewer, time, note; see
:mod:`hematovision.station.schema`). The model's label in ``cells`` is never
changed; a correction is a newer review, and the latest review of a cell (the
highest review id) is its verified label. Besides the model's classes a
reviewer may choose ``smudge``, ``artefact``, ``unidentified`` or ``other``
(with a note saying what it is): a verified differential does not count those.

Every review is its own transaction (the cell is looked up, the label checked
against its session's model, the row inserted, committed), so a ``kill -9``
loses nothing committed; :func:`add_reviews` (a CSV import) checks every row
first and writes them all in one transaction, or none. Stdlib only.
"""

from __future__ import annotations

import shutil
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .differential import REVIEW_ONLY_LABELS, Differential
from ..errors import HematoVisionError
from .log import StationLog, now_iso
from .schema import row_id, stored_json

MAX_REVIEWER = 80
MAX_NOTE = 2000
REVIEW_COLUMNS = ("id", "cell_id", "label", "reviewer", "time", "note")


class ReviewError(HematoVisionError, ValueError):
    """A review that cannot be recorded (each message says how to fix it); nothing was written."""


class InvalidLabelError(ReviewError):
    """The label is neither a class of the cell's model nor one of smudge, artefact, unidentified, other."""


class UnknownCellError(ReviewError, LookupError):
    """No cell with that id in the database."""


class ReviewerError(ReviewError):
    """The reviewer's name is empty or unusable."""


@dataclass(frozen=True)
class Review:
    id: int
    cell_id: int
    label: str
    reviewer: str
    time: str
    note: str = ""


@dataclass(frozen=True)
class ReviewInput:
    """One review to record (a ``--set`` or a CSV row); ``where`` says where it came from, for error messages."""

    cell_id: int
    label: str
    reviewer: str
    note: str = ""
    where: str = ""


@dataclass(frozen=True)
class CellReview:
    """A cell row (as :meth:`StationLog.cells`) and its latest review, if any."""

    cell: dict
    review: Review | None = None

    @property
    def verified_label(self) -> str | None:
        return self.review.label if self.review else None

    def first_choice(self, db_path) -> str | None:
        """The model's first choice when it is not the cell's label (a lab's differential scope did not count it,
        hematovision/scope.py), read from the stored probabilities; None otherwise."""
        probs = stored_json(db_path, self.cell["probabilities"], f"probabilities of cell {self.cell['id']}", dict)
        if not probs:
            return None
        first = max(probs, key=probs.get)
        return first if probs[first] > probs.get(self.cell["label"], 0.0) else None


@dataclass(frozen=True)
class VerifiedCount:
    """A verified differential: counts by verified label over the reviewed cells (``smudge`` etc. in ``excluded``).

    ``cells``: cells in the selection; ``verified``: those with a review; ``agreement``: model label ->
    (reviewed cells the reviewer confirmed, reviewed cells) - the pre-classification's agreement per class.
    """

    differential: Differential
    cells: int
    verified: int
    agreement: dict[str, tuple[int, int]]
    reviewers: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return self.cells > 0 and self.verified == self.cells


def allowed_labels(model_labels: Iterable[str]) -> tuple[str, ...]:
    return (*model_labels, *(x for x in REVIEW_ONLY_LABELS if x not in model_labels))


def check_reviewer(name: str | None) -> str:
    """The reviewer's name, stripped; refuses an empty, over-long or control-character name."""
    text = (name or "").strip()
    if not text:
        raise ReviewerError("reviewer name is empty; give who reviewed the cells, e.g. --reviewer 'A. Smith'.")
    if len(text) > MAX_REVIEWER or any(unicodedata.category(ch) == "Cc" for ch in text):
        raise ReviewerError(f"reviewer name {text[:40]!r} is too long or has control characters; use a plain name of at most "
                            f"{MAX_REVIEWER} characters.")
    return text


def check_label(label: str | None, model_labels: Sequence[str], *, note: str = "", cell_id: int | None = None) -> str:
    """The label as stored (case-insensitive match, stripped); ``other`` needs a note."""
    text = (label or "").strip()
    choices = allowed_labels(model_labels)
    match = text if text in choices else next((c for c in choices if c.lower() == text.lower()), None)
    where = f" for cell {cell_id}" if cell_id is not None else ""
    if match is None:
        raise InvalidLabelError(f"unknown label {text!r}{where}; choose one of the model's classes ({', '.join(model_labels)}) "
                                f"or {', '.join(REVIEW_ONLY_LABELS)}.")
    if match == "other" and not note.strip():
        raise InvalidLabelError(f"label 'other'{where} needs a note saying what the cell is (--note TEXT, or the CSV's note column).")
    return match


def check_note(note: str | None) -> str:
    text = (note or "").strip()
    if len(text) > MAX_NOTE or any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in text):
        raise ReviewError(f"note is longer than {MAX_NOTE} characters or has control characters; shorten it.")
    return text


def _cell_labels(db: StationLog, cell_id: int) -> tuple[str, ...]:
    sql = "SELECT s.id, s.labels FROM cells c JOIN sessions s ON s.id = c.session_id WHERE c.id = ?"
    rows = db.query(sql, (row_id(cell_id),)) if row_id(cell_id) is not None else []
    if not rows:
        span = db.query("SELECT MIN(id), MAX(id), COUNT(*) FROM cells")[0]
        have = f"cells {span[0]}-{span[1]}" if span[2] else "no cells yet"
        raise UnknownCellError(f"no cell {cell_id} in {db.path} ({have}); `review --db {db.path} --list` shows the cell ids.")
    return tuple(stored_json(db.path, rows[0][1], f"labels of session {rows[0][0]}", list))


def _checked(db: StationLog, item: ReviewInput) -> ReviewInput:
    prefix = f"{item.where}: " if item.where else ""
    try:
        reviewer = check_reviewer(item.reviewer)
        note = check_note(item.note)
        label = check_label(item.label, _cell_labels(db, item.cell_id), note=note, cell_id=item.cell_id)
    except ReviewError as exc:
        raise type(exc)(prefix + str(exc)) from None
    return ReviewInput(cell_id=int(item.cell_id), label=label, reviewer=reviewer, note=note, where=item.where)


def add_reviews(db: StationLog, items: Sequence[ReviewInput]) -> list[Review]:
    """Check every review, then write them all in one transaction; any error writes none."""
    with db.transaction() as con:
        checked = [_checked(db, item) for item in items]
        out = []
        for item in checked:
            t = now_iso()
            cur = con.execute("INSERT INTO reviews (cell_id, label, reviewer, time, note) VALUES (?,?,?,?,?)",
                              (item.cell_id, item.label, item.reviewer, t, item.note))
            out.append(Review(int(cur.lastrowid), item.cell_id, item.label, item.reviewer, t, item.note))
    return out


def add_review(db: StationLog, *, cell_id: int, label: str, reviewer: str, note: str = "") -> Review:
    """Record one verified label (its own transaction); raises a :class:`ReviewError` and writes nothing on bad input."""
    return add_reviews(db, [ReviewInput(cell_id=cell_id, label=label, reviewer=reviewer, note=note)])[0]


def _in_sessions(session_ids: Sequence[int] | None) -> tuple[str, tuple]:
    if session_ids is None:
        return "", ()
    return f" WHERE c.session_id IN ({', '.join('?' * len(session_ids))})", tuple(int(s) for s in session_ids)


def latest_reviews(db: StationLog, session_ids: Sequence[int] | None = None) -> dict[int, Review]:
    """Cell id -> its latest review (highest review id), for the cells of these sessions (None: all)."""
    where, args = _in_sessions(session_ids)
    rows = db.query("SELECT r.id, r.cell_id, r.label, r.reviewer, r.time, r.note FROM reviews r "
                    "JOIN (SELECT cell_id, MAX(id) AS last FROM reviews GROUP BY cell_id) l ON r.id = l.last "
                    f"JOIN cells c ON c.id = r.cell_id{where} ORDER BY r.cell_id", args)
    return {row[1]: Review(*row) for row in rows}


def history(db: StationLog, cell_id: int) -> list[Review]:
    """Every review of a cell, oldest first."""
    if row_id(cell_id) is None:
        return []
    return [Review(*row) for row in db.query(f"SELECT {', '.join(REVIEW_COLUMNS)} FROM reviews WHERE cell_id = ? ORDER BY id",
                                             (row_id(cell_id),))]


def cell_reviews(db: StationLog, session_ids: Sequence[int] | None = None, *, uncertain_only: bool = False) -> list[CellReview]:
    """The cells (all sessions, or these) with their latest reviews; ``uncertain_only``: uncertain or out-of-distribution ones."""
    latest = latest_reviews(db, session_ids)
    cells = [c for s in (session_ids if session_ids is not None else [None]) for c in db.cells(s)]
    if uncertain_only:
        cells = [c for c in cells if c["uncertain"] or c["out_of_distribution"]]
    return [CellReview(cell=c, review=latest.get(c["id"])) for c in cells]


def first_choices_outside_scope(db: StationLog, session_ids: Sequence[int] | None = None) -> list[str]:
    """The first choice of each cell a scoped model first called a class it does not count (hematovision/scope.py),
    e.g. ["ig", "ig", "erythroblast"]; empty for an unscoped model."""
    return [first for row in cell_reviews(db, session_ids) if (first := row.first_choice(db.path)) is not None]


def suspect_line(first_choices: Iterable[str]) -> str:
    """The analyser-style suspect count of those first choices (e.g. "...: erythroblast 1, ig 2."), the sentence
    ``report``, its FHIR conclusion and the Batch tab carry ('' when there is nothing to say)."""
    counts = sorted(Counter(first_choices).items())
    if not counts:
        return ""
    listed = ", ".join(f"{label} {n}" for label, n in counts)
    return (f"Cells whose first choice is a class outside this lab's differential (flagged, counted under the best class "
            f"it counts until reviewed): {listed}.")


def verified_count(db: StationLog, session_ids: Sequence[int] | None, labels: Sequence[str]) -> VerifiedCount:
    """The differential of the verified labels (only reviewed cells count; smudge, artefact... are excluded)."""
    diff = Differential(tuple(labels))
    agreement: dict[str, list[int]] = {}
    reviewers: dict[str, None] = {}
    rows = cell_reviews(db, session_ids)
    for row in rows:
        if row.review is None:
            continue
        reviewers[row.review.reviewer] = None
        model = row.cell["label"]
        agreement.setdefault(model, [0, 0])[1] += 1
        agreement[model][0] += int(model == row.review.label)
        if row.review.label in REVIEW_ONLY_LABELS and row.review.label not in labels:
            diff.exclude(row.review.label)
        else:
            diff.add(row.review.label, uncertain=bool(row.cell["uncertain"]))
    verified = sum(1 for r in rows if r.review is not None)
    return VerifiedCount(differential=diff, cells=len(rows), verified=verified,
                         agreement={k: (v[0], v[1]) for k, v in agreement.items()}, reviewers=tuple(reviewers))


@dataclass(frozen=True)
class VerifiedCrops:
    """What :func:`export_verified_crops` wrote: DIR/<label>/cell-<id>.jpg, and what it left out and why."""

    folder: Path
    counts: dict[str, int]
    left_out: tuple[str, ...]
    files: dict[int, Path]  # cell id -> the file written for it
    rows: dict[int, CellReview]  # cell id -> its cell row and the (latest) review that labelled it

    @property
    def cell_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.files))


def export_verified_crops(db: StationLog, dest: Path, *, labels: Sequence[str], session_ids: Sequence[int] | None = None,
                          min_per_class: int = 2) -> VerifiedCrops:
    """Copy the crops of verified cells whose verified label is one of ``labels`` to DEST/<label>/ (the adapt layout).

    Cells verified as smudge, artefact... or as a class the model does not have
    are not used; a missing crop file, or a class with fewer than
    ``min_per_class`` verified cells, is left out and said so.
    """
    chosen: dict[str, list[tuple[int, Path]]] = {}
    left_out, rows, files = [], {}, {}
    for row in cell_reviews(db, session_ids):
        label = row.verified_label
        if label is None or label not in labels:
            continue
        crop = Path(row.cell["crop_path"])
        crop = crop if crop.is_absolute() else db.path.parent / crop
        if not crop.is_file():
            left_out.append(f"cell {row.cell['id']}: crop {crop} is missing")
            continue
        chosen.setdefault(label, []).append((row.cell["id"], crop))
        rows[row.cell["id"]] = row
    for label in [k for k, v in chosen.items() if len(v) < min_per_class]:
        left_out.append(f"{label}: only {len(chosen[label])} verified cell(s) (at least {min_per_class} needed); keeps the "
                        "source model's behaviour")
        del chosen[label]
    for label, cells in chosen.items():
        (dest / label).mkdir(parents=True, exist_ok=True)
        for cell_id, crop in cells:
            files[cell_id] = dest / label / f"cell-{cell_id:07d}{crop.suffix.lower() or '.jpg'}"
            shutil.copyfile(crop, files[cell_id])
    return VerifiedCrops(folder=dest, counts={k: len(v) for k, v in chosen.items()}, left_out=tuple(left_out), files=files,
                         rows={i: rows[i] for i in files})
