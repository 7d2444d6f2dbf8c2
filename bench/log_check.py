"""How long the station's start-up check of an existing log takes as the log grows.

    python -m bench.log_check [--cells 100000 1000000] [--runs 3] [--json OUT]

The station runs SQLite's ``PRAGMA quick_check`` (``StationLog.require_intact``) before it writes to a log that
already holds sessions, so a damaged database is refused instead of written to. The check reads every page, so
its time grows with the log. This builds synthetic logs in a temporary folder (one session, N cell rows and N
frame rows shaped like the station's, no crop files) and times ``require_intact`` on each, after a first untimed
run (the file in the page cache, as on a station that just wrote it).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from bench.common import idleness, machine, time_calls
from hematovision.commands import positive_int, write_json
from hematovision.station.log import StationLog

CELL_ROW = ("INSERT INTO cells (session_id, time, frame_index, source_frame, cell_in_frame, x0, y0, x1, y1, label, "
            "confidence, uncertain, out_of_distribution, probabilities, model_name, model_sha256, crop_path, "
            "source_sha256) VALUES (1, ?, ?, ?, 0, 10, 20, 90, 100, 'neutrophil', 0.93, 0, 0, ?, 'wbc', ?, ?, NULL)")


def synthetic_log(path: Path, cells: int) -> Path:
    """A station log (the station's own schema) with one session and ``cells`` cell and frame rows."""
    with StationLog(path):
        pass  # creates the schema at the current version
    probabilities = json.dumps({f"class{i}": 0.125 for i in range(8)})
    sha = "ab" * 32
    db = sqlite3.connect(path)
    try:
        db.execute("INSERT INTO sessions (id, started, model_name, model_sha256, labels) VALUES "
                   "(1, '2026-12-07T00:00:00+00:00', 'wbc', ?, '[]')", (sha,))
        db.executemany(CELL_ROW, ((f"2026-12-07T00:{i // 60 % 60:02d}:{i % 60:02d}+00:00", i, f"camera:0#{i}", probabilities,
                                   sha, f"session-0001/{i:08d}.png") for i in range(cells)))
        db.execute("INSERT INTO frames (session_id, time, frame_index, source_frame, status, cells_found, cells_classified) "
                   "SELECT session_id, time, frame_index, source_frame, 'classified', 1, 1 FROM cells")
        db.commit()
    finally:
        db.close()
    return path


def run(cell_counts: list[int], runs: int) -> dict:
    rows = []
    with tempfile.TemporaryDirectory(prefix="hv-log-check-") as tmp:
        for n in cell_counts:
            path = synthetic_log(Path(tmp) / f"log-{n}.sqlite", n)
            with StationLog(path, create=False) as log:
                seconds = time_calls(lambda _: log.require_intact(), runs=runs, warmup=1)
            rows.append({"cells": n, "size_mb": round(path.stat().st_size / 1e6, 1),
                         "require_intact_s": {"median": sorted(seconds)[len(seconds) // 2], "max": max(seconds)}})
            path.unlink()
    return {"what": "StationLog.require_intact (PRAGMA quick_check) on synthetic station logs", "runs": runs,
            "rows": rows, "machine": asdict(machine()), "idle": asdict(idleness())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.log_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=positive_int, nargs="+", default=[100_000, 1_000_000], help="cell rows per log")
    p.add_argument("--runs", type=positive_int, default=3)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    result = run(args.cells, args.runs)
    for row in result["rows"]:
        print(f"{row['cells']:>9} cells, {row['size_mb']:>6} MB: start-up check {row['require_intact_s']['median']:.2f} s "
              f"(max {row['require_intact_s']['max']:.2f} s)")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
