"""Station fields/s: runs ``python -m bench.station_bench`` (the station's own benchmark) and parses its summary.

``bench/station_bench.py`` belongs to the station; this wrapper only runs it in a
child process (so its single-thread settings do not leak into the other
benchmarks) and keeps its figures and its printed breakdown.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .common import ROOT

SUMMARY = re.compile(r"station: (?P<frames>\d+) fields in (?P<secs>[\d.]+) s = (?P<fps>[\d.]+) fields/s, "
                     r"(?P<cells>\d+) cells = (?P<cps>[\d.]+) cells/s")


@dataclass(frozen=True)
class StationReport:
    available: bool
    command: str
    fields: int | None = None
    seconds: float | None = None
    fields_per_s: float | None = None
    cells: int | None = None
    cells_per_s: float | None = None
    output: tuple[str, ...] = ()
    reason: str = ""


def run(*, model: str | None, images: Path | None, frames: int = 200, timeout_s: float = 300.0, threads: int = 1) -> StationReport:
    script = ROOT / "bench" / "station_bench.py"
    args = ["-m", "bench.station_bench", "--frames", str(frames), "--threads", str(threads)]
    if model:
        args += ["--model", model]
    if images is not None and images.is_dir():
        args += ["--images", str(images)]
    command = "python " + " ".join(args)
    if not script.exists():
        return StationReport(False, command, reason="bench/station_bench.py is not in this checkout")
    try:
        r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return StationReport(False, command, reason=f"timed out after {timeout_s:.0f} s")
    lines = tuple(line for line in r.stdout.splitlines() if line.strip())
    m = SUMMARY.search(r.stdout)
    if r.returncode != 0 or m is None:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return StationReport(False, command, output=lines, reason=f"exit {r.returncode}: {tail[:300]}")
    return StationReport(True, command, fields=int(m["frames"]), seconds=float(m["secs"]), fields_per_s=float(m["fps"]),
                         cells=int(m["cells"]), cells_per_s=float(m["cps"]), output=lines)
