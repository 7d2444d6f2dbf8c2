"""``python -m hematovision report --db station.sqlite [--session N|all] [--csv cells.csv]``

Prints the differential count of a station session (default: the latest)
from the committed rows of its SQLite log, with what became of its frames,
and with --csv exports one row per classified cell (crop paths are relative
to the database's folder). Exit status: 0 ok, 1 the log cannot be read, 2 usage.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="print a station session's differential; export its cells as CSV",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", required=True, type=Path, help="the station's SQLite log")
    p.add_argument("--session", default="latest", help="session id, 'latest' (default) or 'all'")
    p.add_argument("--csv", type=Path, help="write the session's cells to this CSV file")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..differential import Differential
    from ..errors import StationLogError
    from ..stationlog import CELL_COLUMNS, StationLog

    which = str(args.session).strip().lower()
    if which not in ("latest", "all") and not which.isdigit():
        print(f"error: --session must be a number, 'latest' or 'all', not {args.session!r}", file=sys.stderr)
        return 2
    try:
        with StationLog(args.db, create=False) as db:
            if which == "all":
                sessions = db.sessions()
            elif which == "latest":
                sessions = [s for s in [db.latest_session()] if s is not None]
            else:
                sessions = [db.session(int(which))]
            if not sessions:
                print(f"{args.db}: no sessions yet")
                return 0
            total = Differential(sessions[-1].labels)
            for s in sessions:
                diff = db.differential(s.id)
                frames = ", ".join(f"{k} {v}" for k, v in db.frame_counts(s.id).items()) or "none"
                state = f"ended {s.ended} ({s.stop_reason})" if s.ended else "running or interrupted"
                print(f"session {s.id}: started {s.started}, {state}\n  model {s.model_name} (sha256 {s.model_sha256[:12]}), "
                      f"source {s.source}, mode {s.mode}\n  frames: {frames}")
                print(diff.format())
                total.extend(diff)
            if len(sessions) > 1:
                print(total.format(title=f"All {len(sessions)} sessions: {total.total} cells"))
            if args.csv:
                n = _write_csv(args.csv, CELL_COLUMNS, (row for s in sessions for row in db.cells(s.id)))
                print(f"wrote {n} cells to {args.csv}")
    except StationLogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot write {args.csv}: {exc}", file=sys.stderr)
        return 1
    return 0


#: Text a spreadsheet would run as a formula (a watched folder's file names come from outside).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _write_csv(path: Path, columns, rows) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "'" + v if isinstance(v, str) and v.startswith(FORMULA_PREFIXES) else v for k, v in row.items()})
            n += 1
    return n
