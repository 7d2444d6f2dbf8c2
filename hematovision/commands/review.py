"""``python -m hematovision review --db station.sqlite (--list | --set CELL_ID LABEL | --import CSV | --export CSV |
--export-cells DIR)``

The technologist's review of a station's cells, headless. Verified labels are
appended to the database's ``reviews`` table; the model's labels are never
changed, and the latest review of a cell wins. Labels: the model's classes,
or smudge, artefact, unidentified, other (other needs --note); those four are
left out of a verified differential (`report --verified`).

  --list [--uncertain] [--unverified]     the cells, their model label and verified label
  --set CELL_ID LABEL --reviewer NAME [--note TEXT]
  --import CSV                            rows cell_id,label,reviewer[,note]; all or nothing
  --export CSV                            every cell with its latest review (re-importable)
  --export-cells DIR                      the verified cells as a labelled folder, DIR/<label>/ + DIR/labels.csv,
                                          for adapt --cells, training.crosslab --labelled, training.fewshot --cells

Exit status: 0 ok, 1 bad input or an unusable database (nothing written), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import MAX_ROW_ID, bounded_int, fail, select_sessions, session_choice
from .report import refuse_outputs


def add_parser(sub) -> None:
    p = sub.add_parser("review", help="verify or correct the station's cells (verified labels, CSV import/export)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", required=True, type=Path, help="the station's SQLite log")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--list", action="store_true", help="list the cells with their model and verified labels")
    what.add_argument("--set", nargs=2, metavar=("CELL_ID", "LABEL"), help="record a verified label for one cell")
    what.add_argument("--import", dest="import_csv", type=Path, metavar="CSV", help="record the reviews of a CSV file")
    what.add_argument("--export", dest="export_csv", type=Path, metavar="CSV", help="write every cell and its latest review")
    what.add_argument("--export-cells", type=Path, metavar="DIR",
                      help="copy the verified cells' crops to a new folder DIR/<label>/ with DIR/labels.csv (provenance): "
                           "what adapt --cells, training.crosslab --labelled and training.fewshot --cells read")
    p.add_argument("--reviewer", help="who reviewed (required with --set)")
    p.add_argument("--note", default="", help="free text kept with the review (required for the label 'other')")
    p.add_argument("--session", type=session_choice("latest", "all"), default="all",
                   help="with --list/--export/--export-cells: session id, 'latest' or 'all' (default: %(default)s)")
    p.add_argument("--uncertain", action="store_true", help="with --list: only cells flagged uncertain or out of distribution")
    p.add_argument("--unverified", action="store_true", help="with --list: only cells without a review")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..errors import HematoVisionError

    if args.set is not None and args.reviewer is None:
        return fail("--set needs --reviewer NAME (who verified the cell)", status=2)
    if args.set is not None:
        try:
            args.set[0] = bounded_int(1, MAX_ROW_ID)(args.set[0])
        except argparse.ArgumentTypeError as exc:
            return fail(f"CELL_ID must be a cell id number (see --list): {exc}", status=2)
    try:
        if args.export_csv is not None:
            refuse_outputs(args.db, args.export_csv)
        return _run(args)
    except (HematoVisionError, OSError) as exc:
        return fail(exc)


def _run(args) -> int:
    from ..station.log import StationLog

    with StationLog(args.db, create=False) as db:
        if args.set is not None or args.import_csv is not None:
            db.require_intact()
        if args.set is not None:
            return _set(db, args)
        if args.import_csv is not None:
            return _import(db, args.import_csv)
        sessions = None if args.session == "all" else [s.id for s in select_sessions(db, args.session)]
        if args.export_cells is not None:
            return _export_cells(db, args.export_cells, sessions)
        if args.export_csv is not None:
            from ..station.reviewcsv import write_reviews_csv

            n = write_reviews_csv(db, args.export_csv, session_ids=sessions)
            print(f"wrote {n} cells to {args.export_csv}")
            return 0
        return _list(db, sessions, uncertain=args.uncertain, unverified=args.unverified)


def _export_cells(db, dest: Path, sessions) -> int:
    from ..station.labelled_folder import export_labelled_folder

    result = export_labelled_folder(db, dest, session_ids=sessions)
    for line in result.left_out:
        print(f"left out: {line}", file=sys.stderr)
    counts = ", ".join(f"{label} {n}" for label, n in result.counts.items())
    print(f"wrote {sum(result.counts.values())} verified cells to {dest}/<label>/ ({counts}) and {dest}/labels.csv")
    return 0


def _set(db, args) -> int:
    from ..station.review import add_review

    review = add_review(db, cell_id=int(args.set[0]), label=args.set[1], reviewer=args.reviewer, note=args.note)
    cell = db.cell(review.cell_id)
    change = "confirmed" if cell["label"] == review.label else f"corrected from {cell['label']}"
    print(f"cell {review.cell_id}: {review.label} ({change}) by {review.reviewer} at {review.time}")
    return 0


def _import(db, path: Path) -> int:
    from ..station.reviewcsv import import_reviews

    result = import_reviews(db, path)
    print(f"{path}: {result.written} review(s) recorded, {result.unchanged} unchanged, {result.blank} blank row(s) skipped")
    return 0


def _list(db, sessions, *, uncertain: bool, unverified: bool) -> int:
    from ..station.review import cell_reviews

    rows = cell_reviews(db, sessions, uncertain_only=uncertain)
    total = len(rows)
    verified = sum(1 for r in rows if r.review is not None)
    if unverified:
        rows = [r for r in rows if r.review is None]
    print(f"{'cell':>7} {'session':>7} {'model label':<14} {'conf':>5} {'flags':<9} {'verified':<14} {'reviewer':<16} crop")
    for r in rows:
        c = r.cell
        first = r.first_choice(db.path)  # outside the model's differential scope: "1st=<class>"
        flags = ",".join(f for f, on in (("unc", c["uncertain"]), ("ood", c["out_of_distribution"]),
                                         (f"1st={first}", first)) if on) or "-"
        who = r.review.reviewer if r.review else "-"
        print(f"{c['id']:>7} {c['session_id']:>7} {c['label']:<14} {c['confidence']:>5.2f} {flags:<9} "
              f"{r.verified_label or '-':<14} {who:<16} {c['crop_path']}")
    print(f"{verified} of {total} {'flagged ' if uncertain else ''}cells verified")
    return 0
