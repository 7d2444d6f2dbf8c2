"""A station's verified cells as a labelled folder: DIR/<label>/cell-<id>.<ext> and DIR/labels.csv.

The folder is what ``adapt --cells``, ``training.crosslab --labelled``, ``training.fewshot --cells`` and
``training.label_audit --cells`` read, so a lab's verified cells can be adapted to, measured on, shared with the
next training run, or checked for label errors. Only cells whose latest review names one of the sessions' model
classes are exported (smudge, artefact, unidentified and other are not cell types). ``labels.csv`` records each
file's provenance: cell and review ids, session, the model's label and confidence, reviewer, review time and the
crop's sha256. The files are written to a hidden folder beside DIR and renamed to DIR only when complete; an
existing DIR that is not empty is refused (nothing already saved is replaced).
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import HematoVisionError
from ..registry import sha256_file
from .log import StationLog
from .review import VerifiedCrops, export_verified_crops

COLUMNS = ("file", "label", "cell_id", "review_id", "session_id", "model_label", "model_confidence", "reviewer",
           "review_time", "sha256")


class LabelledFolderExistsError(HematoVisionError, FileExistsError):
    """The destination folder already holds files."""


class NoVerifiedCellsError(HematoVisionError, ValueError):
    """No cell of the chosen sessions has a review naming one of the model's classes."""


class CropsMissingError(HematoVisionError, FileNotFoundError):
    """Cells are verified, but none of their crop files is where the database says."""


@dataclass(frozen=True)
class LabelledFolder:
    folder: Path
    counts: dict[str, int]  # label -> files written
    left_out: tuple[str, ...]  # missing crops, said so


def model_classes(db: StationLog, session_ids: Sequence[int] | None) -> tuple[str, ...]:
    """The model classes of these sessions (all: every session's), in first-seen order."""
    sessions = db.sessions() if session_ids is None else [db.session(i) for i in session_ids]
    return tuple(dict.fromkeys(label for s in sessions for label in s.labels))


def _check_destination(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise LabelledFolderExistsError(f"{dest} is a file; choose a new folder name for the labelled cells.")
    if dest.is_dir() and any(dest.iterdir()):
        raise LabelledFolderExistsError(f"{dest} already holds files; choose a new or empty folder (nothing was written).")


def export_labelled_folder(db: StationLog, dest: str | Path, *, session_ids: Sequence[int] | None = None) -> LabelledFolder:
    """Write the verified cells of these sessions (None: all) to ``dest``; see the module docstring."""
    dest = Path(dest)
    _check_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        crops = export_verified_crops(db, staging, labels=model_classes(db, session_ids), session_ids=session_ids,
                                      min_per_class=1)
        if not crops.counts and crops.left_out:
            raise CropsMissingError(f"{db.path}: the crop files of the verified cells are missing ({crops.left_out[0]}"
                                    f"{', ...' if len(crops.left_out) > 1 else ''}); run this beside the station's crops "
                                    "folder (crop paths are relative to the database's folder).")
        if not crops.counts:
            raise NoVerifiedCellsError(f"{db.path}: no verified cells with one of the model's classes; verify cells first "
                                       "(`python -m hematovision review --db DB --set CELL_ID LABEL --reviewer NAME`).")
        _write_labels_csv(staging, crops)
        _check_destination(dest)  # again: another program may have written there meanwhile
        if dest.is_dir():
            dest.rmdir()  # empty, checked just above
        staging.rename(dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return LabelledFolder(folder=dest, counts=crops.counts, left_out=crops.left_out)


def _write_labels_csv(folder: Path, crops: VerifiedCrops) -> None:
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(COLUMNS)
        for cell_id in crops.cell_ids:
            cell, review, path = crops.rows[cell_id].cell, crops.rows[cell_id].review, crops.files[cell_id]
            out.writerow([path.relative_to(folder).as_posix(), review.label, cell_id, review.id, cell["session_id"],
                          cell["label"], f"{cell['confidence']:.4f}", review.reviewer, review.time, sha256_file(path)])
