"""Batch throughput of the CLI on a folder of images, and its peak memory.

``python -m hematovision classify --model M FOLDER`` runs in a child process; its
wall time is taken around the whole run (interpreter start, model load and
every image). Its peak RSS is the child's own high-water mark, ``VmHWM`` in
``/proc/<pid>/status``, polled every 5 ms while it runs (monotone, so the last
reading is the peak up to then). ``ru_maxrss`` from ``wait4`` is not used: Linux
carries the parent's high-water mark over fork + exec, so a child of a big
benchmark process would report the parent's size. A one-image run gives the
fixed start-up cost, so the steady rate ``(n - 1) / (t_n - t_1)`` is reported as well.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .common import ROOT, fill_folder


@dataclass(frozen=True)
class CliRun:
    name: str
    command: str
    images: int
    classified: int
    errors: int
    exit_code: int
    wall_s: float
    peak_rss_mib: float
    timed_out: bool


@dataclass(frozen=True)
class ThroughputReport:
    source: str  # where the images came from
    images: int
    runs: tuple[CliRun, ...]
    startup_s: float  # the one-image run's wall time
    images_per_s: float  # n / wall, start-up included
    steady_images_per_s: float  # (n - 1) / (t_n - t_1): start-up excluded
    cam_images_per_s: float | None  # with --cam-dir (an overlay PNG written per image)


def run_cli(args: list, *, name: str, images: int, env: dict | None = None, timeout_s: float = 300.0,
            shown: list | None = None, stdout_to: Path | None = None) -> CliRun:
    """Run ``python -m hematovision ARGS`` and return its wall time, peak RSS and JSON-line counts.

    ``shown``: the arguments as reported (temporary paths replaced by placeholders); ``stdout_to``: keep
    the command's stdout in that file (e.g. to compare the lines of two runs)."""
    cmd = [sys.executable, "-m", "hematovision", *map(str, args)]
    with (open(stdout_to, "w+") if stdout_to else tempfile.TemporaryFile("w+")) as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, env=env)
        timed_out, peak_kib = False, 0
        while True:
            peak_kib = max(peak_kib, vm_hwm_kib(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout_s:
                timed_out = True
                proc.send_signal(signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        rows = [json.loads(line) for line in out if line.strip()]
    return CliRun(
        name=name, command=" ".join(["python", "-m", "hematovision", *map(str, shown or args)]), images=images,
        classified=sum("label" in r for r in rows), errors=sum("error" in r for r in rows), exit_code=proc.returncode,
        wall_s=wall, peak_rss_mib=(peak_kib or usage.ru_maxrss) / 1024.0, timed_out=timed_out)


def vm_hwm_kib(pid: int) -> int:
    """The process's peak resident set size in KiB (``VmHWM``), 0 where /proc does not tell."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run(model: str, sources: list[Path], *, n: int = 1000, source_name: str = "", env: dict | None = None,
        cam: bool = True, timeout_s: float = 300.0) -> ThroughputReport:
    """Classify ``n`` images (``sources`` cycled if fewer) through the CLI with ``--model model``."""
    with tempfile.TemporaryDirectory(prefix="hv-bench-cli-") as tmp:
        folder = fill_folder(sources, n, Path(tmp) / "images")
        one = Path(tmp) / "one"
        fill_folder(sources[:1], 1, one)
        shown = Path(model).name if Path(model).suffix else model
        runs = [run_cli(["classify", "--model", model, one], name="one_image", images=1, env=env, timeout_s=timeout_s,
                        shown=["classify", "--model", shown, "ONE_IMAGE_DIR"]),
                run_cli(["classify", "--model", model, folder], name="folder", images=n, env=env, timeout_s=timeout_s,
                        shown=["classify", "--model", shown, "IMAGES_DIR"])]
        if cam:
            runs.append(run_cli(["classify", "--model", model, "--cam-dir", Path(tmp) / "cams", folder],
                                name="folder_cam", images=n, env=env, timeout_s=timeout_s,
                                shown=["classify", "--model", shown, "--cam-dir", "CAM_DIR", "IMAGES_DIR"]))
    first, full = runs[0], runs[1]
    steady = (n - 1) / (full.wall_s - first.wall_s) if full.wall_s > first.wall_s and n > 1 else float("nan")
    return ThroughputReport(
        source=source_name or f"{len(sources)} distinct images", images=n, runs=tuple(runs), startup_s=first.wall_s,
        images_per_s=n / full.wall_s, steady_images_per_s=steady,
        cam_images_per_s=(n / runs[2].wall_s) if cam else None)
