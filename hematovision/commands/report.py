"""``python -m hematovision report --db station.sqlite [--session N|all] [--verified] [--csv cells.csv] [--fhir report.json]``

Prints the differential count of a station session (default: the latest)
from the committed rows of its SQLite log, with what became of its frames,
and with --csv exports one row per classified cell (crop paths are relative
to the database's folder; the latest review's label and reviewer included).

--verified counts the technologists' verified labels instead of the model's
(only reviewed cells count; smudge, artefact, unidentified and other are left
out and listed). --fhir writes a FHIR R4 Bundle: a DiagnosticReport with one
LOINC-coded Observation per white-cell class (percent of the counted
leukocytes), the device and model; status "final" only with --verified once
every cell of the selection is reviewed, else "preliminary". With a scoped model
(``python -m hematovision scope``) the report and the FHIR conclusion also count
the cells whose first choice was a class the lab does not count (e.g. "ig 8"),
as an analyser's suspect flags do. Research use only.
Exit status: 0 ok, 1 the log cannot be read or the report not written, 2 usage.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from ..station.report import FORMULA_PREFIXES, escape_formula  # noqa: F401 - FORMULA_PREFIXES: re-exported for older imports
from . import fail, refuse_to_overwrite, select_sessions, session_choice


def refuse_outputs(db: Path, *outputs: Path | None) -> None:
    """Raise ``FileExistsError`` before writing an output over the station database (or its -wal/-shm files), over
    another SQLite database (another station's log), or over another output of the same command."""
    from ..station.schema import SQLITE_MAGIC, file_head

    given = [out for out in outputs if out is not None]
    for i, out in enumerate(given):
        refuse_to_overwrite(out, db, *(Path(f"{db}{end}") for end in ("-wal", "-shm", "-journal")))
        refuse_to_overwrite(out, *given[:i], what="another output of this command")
        if not out.is_file():
            continue  # missing, a folder, a device: the write itself says what is wrong
        try:
            is_sqlite = file_head(out) == SQLITE_MAGIC
        except OSError:
            continue
        if is_sqlite:
            raise FileExistsError(f"{out} is an SQLite database (another station's log?); writing there would destroy it. "
                                  "Choose another output file.")


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="print a station session's differential; export its cells as CSV and FHIR",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", required=True, type=Path, help="the station's SQLite log")
    p.add_argument("--session", type=session_choice("latest", "all"), default="latest",
                   help="session id, 'latest' or 'all' (default: %(default)s)")
    p.add_argument("--verified", action="store_true", help="count the verified labels of reviewed cells (see `review`)")
    p.add_argument("--csv", type=Path, help="write the session's cells to this CSV file")
    p.add_argument("--fhir", type=Path, help="write a FHIR R4 Bundle (DiagnosticReport + Observations) to this JSON file")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..errors import HematoVisionError

    try:
        refuse_outputs(args.db, args.csv, args.fhir)
    except FileExistsError as exc:
        return fail(exc)
    try:
        return _report(args)
    except HematoVisionError as exc:
        return fail(exc)
    except OSError as exc:
        return fail(f"cannot write the report: {exc}")


def _report(args) -> int:
    from ..station.log import StationLog

    with StationLog(args.db, create=False) as db:
        sessions = select_sessions(db, args.session)
        if not sessions:
            print(f"{args.db}: no sessions yet" + ("; no FHIR report written" if args.fhir else ""))
            return 1 if args.fhir else 0
        _print_sessions(db, sessions, verified=args.verified)
        if args.csv:
            n = _write_csv(args.csv, csv_columns(), _csv_rows(db, sessions))
            print(f"wrote {n} cells to {args.csv}")
        if args.fhir:
            _write_fhir(db, sessions, args.fhir, verified=args.verified)
    return 0


def _print_sessions(db, sessions, *, verified: bool) -> None:
    from ..station.differential import Differential
    from ..station.review import first_choices_outside_scope, suspect_line, verified_count

    total = Differential(sessions[-1].differential_labels)
    for s in sessions:
        frames = ", ".join(f"{k} {v}" for k, v in db.frame_counts(s.id).items()) or "none"
        state = f"ended {s.ended} ({s.stop_reason})" if s.ended else "running or interrupted"
        print(f"session {s.id}: started {s.started}, {state}\n  model {s.model_name} (sha256 {s.model_sha256[:12]}), "
              f"source {s.source}, mode {s.mode}\n  frames: {frames}")
        if verified:
            count = verified_count(db, [s.id], s.differential_labels)
            diff = count.differential
            print(diff.format(title=f"Verified differential: {diff.total} cells ({count.verified} of {count.cells} reviewed)"))
        else:
            diff = db.differential(s.id)
            print(diff.format())
        if s.counted is not None:
            print(f"  not assessed (outside this lab's differential): {', '.join(lb for lb in s.labels if lb not in s.counted)}")
        shift = db.batch_shift(s.id)
        if shift.shifted:
            print(f"  WARNING: {shift.message()}")
        suspect = suspect_line(first_choices_outside_scope(db, [s.id]))
        if suspect:
            print(f"  {suspect}")
        total.extend(diff)
    if len(sessions) > 1:
        print(total.format(title=f"All {len(sessions)} sessions: {total.total} cells"))


def _write_fhir(db, sessions, path: Path, *, verified: bool) -> None:
    from ..station.fhir import DifferentialReport, FhirExportError, build_bundle, write_bundle
    from ..station.review import first_choices_outside_scope, suspect_line, verified_count
    from ..station.log import now_iso

    models = {(s.model_name, s.model_sha256, s.labels, s.differential_labels) for s in sessions}
    if len(models) > 1:
        raise FhirExportError("the selected sessions used different models or lab scopes; write one FHIR report per model "
                              "(--session N).")
    name, sha, labels, counted = models.pop()
    ids = [s.id for s in sessions]
    count = verified_count(db, ids, counted)
    diff = count.differential if verified else _model_differential(db, ids, counted)
    report = DifferentialReport(labels=diff.labels, counts=dict(diff.counts), model_name=name, model_sha256=sha, verified=verified,
                                not_counted=tuple(lb for lb in labels if lb not in diff.labels),
                                cells=count.cells, cells_verified=count.verified, excluded=dict(diff.excluded),
                                reviewers=count.reviewers, effective=sessions[0].started, sessions=tuple(ids),
                                shift_warning=db.batch_shift(*ids).message(),
                                suspect=suspect_line(first_choices_outside_scope(db, ids)))
    write_bundle(build_bundle(report, issued=now_iso()), path)
    print(f"wrote FHIR R4 Bundle ({'final' if report.final else 'preliminary'}) to {path}")


def _model_differential(db, ids, labels):
    from ..station.differential import Differential

    total = Differential(labels)
    for i in ids:
        total.extend(db.differential(i, labels=labels))
    return total


def _csv_rows(db, sessions):
    from ..station.review import latest_reviews

    latest = latest_reviews(db, [s.id for s in sessions])
    for s in sessions:
        for row in db.cells(s.id):
            review = latest.get(row["id"])
            yield {**row, "verified_label": review.label if review else None, "reviewer": review.reviewer if review else None,
                   "reviewed_at": review.time if review else None}


def _write_csv(path: Path, columns, rows) -> int:
    from ..station.report import replacing

    n = 0
    with replacing(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: escape_formula(v) if isinstance(v, str) else v for k, v in row.items()})
            n += 1
    return n


def csv_columns() -> tuple[str, ...]:
    """Columns of the cells CSV: the log's cells, then the latest review of each."""
    from ..station.log import CELL_COLUMNS

    return (*CELL_COLUMNS, "verified_label", "reviewer", "reviewed_at")
