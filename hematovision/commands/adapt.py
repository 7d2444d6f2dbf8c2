"""``python -m hematovision adapt --model NAME_OR_PATH (--cells DIR | --db station.sqlite) --out OUT_DIR [--name NAME]``

Few-shot adaptation to a lab: refits the model's dense head on the lab's own
labelled cells, DIR/<label>/<image> (labels are the model's class names; a lab
may label only some classes, the others keep the source behaviour). Writes
OUT_DIR/<name>.json with its .tflite (unchanged), .head.npz and .ood.npz, usable
as ``classify --model OUT_DIR/<name>.json``. See hematovision/adapt.py for the
method, and its cross-validated accuracy before/after on the lab's cells. The
files appear in OUT_DIR only when all are complete; an earlier adaptation of the
same name is replaced, any other model's files there are never overwritten
(hematovision/lab_model_files.py).

--db takes the cells from a station database instead: the crops of the cells a
technologist verified (`review`) with one of the model's classes (smudge,
artefact, unidentified, other are not used; a class with fewer than 2 verified
cells keeps the source behaviour). The adapted JSON records the database, the
cell ids and their review ids. Exit status: 0 written, 1 the model or the
cells could not be used, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

from . import add_model_argument, fail, finite_float, session_choice, write_json


def add_parser(sub) -> None:
    from ..adapt import DEFAULT_L2

    p = sub.add_parser("adapt", help="refit the head on a lab's labelled cells (few-shot)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_argument(p, use=" to adapt")
    cells = p.add_mutually_exclusive_group(required=True)
    cells.add_argument("--cells", type=Path, help="folder of labelled cells, DIR/<label>/<image>")
    cells.add_argument("--db", type=Path, help="station database: use its verified cells (see `review`)")
    p.add_argument("--session", type=session_choice("all"), default="all", help="with --db: session id or 'all' (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="folder for the adapted model's files")
    p.add_argument("--name", type=model_name, default=None,
                   help="adapted model name: letters, digits, - and _ (default: <model>-lab). An earlier adaptation of "
                        "that name in --out is replaced; any other model there is never overwritten")
    p.add_argument("--l2", type=finite_float(0, low_open=True), default=DEFAULT_L2,
                   help="strength of the pull towards the source head, fixed (default: chosen per lab by cross-validation on "
                        "its cells, from the grid in hematovision/adapt.py)")
    p.set_defaults(run=run)


def model_name(text: str) -> str:
    """An argparse ``type`` for ``--name``: a plain model name (hematovision/lab_model_files.py)."""
    from ..lab_model_files import ModelNameError, check_name

    try:
        return check_name(text)
    except ModelNameError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def log(msg: str) -> None:
    print(msg, file=sys.stderr)


def run(args) -> int:
    from ..adapt import adapt
    from ..errors import HematoVisionError

    try:
        with warnings.catch_warnings():  # skipped or unused images: one "warning:" line each, no source location
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, *_args, **_kw: log(f"warning: {message}")
            if args.db is None:
                path = adapt(args.model, args.cells, args.out, name=args.name, l2=args.l2, log=log)
            else:
                path = adapt_from_db(args.model, args.db, args.out, name=args.name, l2=args.l2,
                                     session_ids=None if args.session == "all" else [int(args.session)])
    except (HematoVisionError, OSError) as exc:
        return fail(exc)
    print(path)
    return 0


def adapt_from_db(model: str, db_path: Path, out: Path, *, name: str | None, l2: float | None, session_ids: list[int] | None) -> Path:
    """Export the verified crops to a temporary DIR/<label>/ folder, adapt on it, record where the cells came from."""
    from ..adapt import NoCellsError, adapt
    from ..registry import resolve
    from ..station.review import export_verified_crops
    from ..station.log import StationLog

    labels = resolve(model).labels
    with tempfile.TemporaryDirectory(prefix="hematovision-verified-") as tmp, StationLog(db_path, create=False) as db:
        if session_ids is not None:
            session_ids = [db.session(i).id for i in session_ids]
        crops = export_verified_crops(db, Path(tmp), labels=labels, session_ids=session_ids)
        for line in crops.left_out:
            log(f"left out: {line}")
        if not crops.counts:
            raise NoCellsError(f"{db_path}: no verified cells with a class of this model ({', '.join(labels)}) and at least "
                               "2 cells per class; verify cells first (`python -m hematovision review --db DB --set ...`).")
        log(f"{db_path}: {len(crops.cell_ids)} verified cells: " + ", ".join(f"{k} {v}" for k, v in crops.counts.items()))
        path = adapt(model, tmp, out, name=name, l2=l2, log=log)
    data = json.loads(path.read_text(encoding="utf-8"))
    data.setdefault("adaptation", {}).setdefault("cells", {})["from_station_db"] = {
        "db": str(db_path.resolve()), "sessions": session_ids or "all", "cell_ids": list(crops.cell_ids),
        "review_ids": [crops.rows[i].review.id for i in crops.cell_ids], "left_out": list(crops.left_out),
        "rule": "latest review of each cell; verified label among the model's classes; >= 2 cells per class"}
    return write_json(path, data)
