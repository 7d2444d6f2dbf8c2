"""Station throughput: whole 640x480 fields per second and cells per second, single-threaded.

    python -m bench.station_bench --images ../shared/data/bccd/images [--model NAME] [--frames 200]

Frames are decoded into memory first (a camera delivers decoded frames) and fed
through a fake source into the real station: quality gate, motion gate, stain
segmentation, cropping, classification (``cam=False``), JPEG crop + SQLite row
per cell, all written to a temporary folder. TFLite and OpenCV run on one
thread. ``--model`` defaults to the CLI's default model when the models folder
holds it, else to the tiny test model (built with TensorFlow; not a blood-cell model). Without
``--images``, synthetic fields are used. Also prints where the time goes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from hematovision.commands import DEFAULT_MODEL
from hematovision.registry import models_folder


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.station_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, help="folder of field images (e.g. BCCD's bccd/images); default: synthetic fields")
    p.add_argument("--model", help=f"model name or path (default: {DEFAULT_MODEL} if the models folder holds it, "
                                   "else the tiny test model)")
    p.add_argument("--frames", type=int, default=200, help="frames to process (default: %(default)s)")
    p.add_argument("--distinct", type=int, default=100, help="distinct images loaded and cycled through (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="TFLite and OpenCV threads (default: %(default)s)")
    return p.parse_args(argv)


def load_frames(folder: Path | None, n: int) -> list[np.ndarray]:
    from hematovision.images import load_image

    if folder is None:
        from tests.test_field import synthetic_field

        return [synthetic_field(seed=i)[0] for i in range(n)]
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    if not files:
        sys.exit(f"error: no images in {folder}")
    return [load_image(p) for p in files]


def resolve_model(name: str | None, tmp: Path) -> tuple[str, str]:
    if name:
        return name, name
    default = models_folder() / f"{DEFAULT_MODEL}.json"
    if default.exists():
        return str(default), f"{DEFAULT_MODEL} ({default})"
    from tests.tiny_model import build

    return str(build(tmp / "tiny")["tiny-int8"]), f"tiny-int8 TEST model ({default} absent)"


def main(argv=None) -> int:
    args = parse_args(argv)
    cv2.setNumThreads(args.threads)
    from hematovision import load_model
    from hematovision.cells import detection as field
    from hematovision.station.sources import FakeSource
    from hematovision.station.loop import MotionGate, Station, StationConfig, assess_quality

    with tempfile.TemporaryDirectory(prefix="station-bench-") as tmpdir:
        tmp = Path(tmpdir)
        model_path, model_desc = resolve_model(args.model, tmp)
        clf = load_model(model_path, num_threads=args.threads)
        frames = load_frames(args.images, args.distinct)
        stream = [frames[i % len(frames)] for i in range(args.frames)]
        h, w = frames[0].shape[:2]
        # warm-up (first interpreter call allocates)
        clf.predict(frames[0][:128, :128], cam=False)

        config = StationConfig(db_path=tmp / "bench.sqlite", summary_every=0, source_name="bench")
        start = time.perf_counter()
        with FakeSource(stream) as source:
            summary = Station(clf, config, printer=lambda s: None).run(source)
        elapsed = time.perf_counter() - start

        # Where the time goes, on the same frames.
        t = {"quality": 0.0, "motion": 0.0, "segment+crop": 0.0, "classify": 0.0}
        gate, n_cells = MotionGate(), 0
        for rgb in frames:
            t0 = time.perf_counter()
            assess_quality(rgb)
            t1 = time.perf_counter()
            _, small = gate.check(rgb)
            t2 = time.perf_counter()
            crops = field.crop_cells(rgb)
            t3 = time.perf_counter()
            for c in crops:
                clf.predict(c.image, cam=False)
            t4 = time.perf_counter()
            gate.accept(small, crops)
            n_cells += len(crops)
            for k, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                t[k] += dt

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"model: {model_desc}; input {clf.spec.input.height}x{clf.spec.input.width}; runtime {clf.model.runtime_name}; "
          f"threads {args.threads}")
    print(f"frames: {len(stream)} x {w}x{h} ({'synthetic' if args.images is None else args.images}), "
          f"{len(frames)} distinct; load average {load:.2f} on {os.cpu_count()} CPUs")
    print(f"station: {summary.frames} fields in {elapsed:.2f} s = {summary.frames / elapsed:.1f} fields/s, "
          f"{summary.cells} cells = {summary.cells / elapsed:.1f} cells/s "
          f"({summary.frames_classified} fields with cells; skipped {summary.skipped or 'none'})")
    per = ", ".join(f"{k} {1000 * v / len(frames):.1f} ms" for k, v in t.items())
    print(f"per field ({n_cells / len(frames):.2f} cells/field): {per}; "
          f"per cell classify {1000 * t['classify'] / max(n_cells, 1):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
