"""The app under hostile uploads: peak RSS, and whether a normal request is still answered.

    python -m bench.app_memory [--out bench/results/app_memory.json]

Starts ``python app.py`` in its own process (``bench.app_load.AppProcess``), then sends:
the z-stack bomb of issue 16 (128 x 2048 x 2048 zlib zeros, about 1 MB on disk) to
``/zstack_mesh``; a 40 MP photograph-like JPEG to ``/classify``, ``/explain``,
``/mesh`` and ``/morphology``; and, while those run, a normal example cell to
``/classify`` from a second client, again and again. Reports the server's peak RSS (``VmHWM``),
its RSS at the end, each call's outcome and time, and the normal request's answer.
Target (issue 16): peak RSS < 1.5 GB and the normal ``/classify`` answers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from hematovision.commands import DEFAULT_MODEL, write_json

from .app_load import AppProcess, _peak_rss_mib, _rss_mib, client
from .common import ROOT

TARGET_PEAK_MIB = 1536
EXAMPLE = ROOT / "examples" / "wbc" / "neutrophil__BNE_107370.jpg"


def zstack_bomb(path: Path) -> Path:
    import tifffile

    page = np.zeros((2048, 2048), np.uint8)
    with tifffile.TiffWriter(path) as tw:
        for _ in range(128):
            tw.write(page, compression="zlib", contiguous=False)
    return path


def big_photo(path: Path, *, width: int = 8000, height: int = 5000) -> Path:
    """A smooth colour gradient with a dark disc: decodes to 40 MP, compresses small."""
    import cv2

    yy, xx = np.mgrid[0:height:8, 0:width:8]
    small = np.stack([(xx % 255), (yy % 255), ((xx + yy) % 255)], -1).astype(np.uint8)
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    cv2.circle(img, (width // 2, height // 2), 400, (120, 40, 140), -1)
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return path


def _call(cl, api: str, *args) -> dict:
    t0 = time.perf_counter()
    try:
        cl.predict(*args, api_name=api)
        outcome = "ok"
    except Exception as exc:  # noqa: BLE001 - any refusal is recorded with its message
        outcome = f"error: {str(exc)[:160]}"
    return {"endpoint": api, "outcome": outcome, "seconds": round(time.perf_counter() - t0, 2)}


def run(*, model: str = DEFAULT_MODEL) -> dict:
    from gradio_client import handle_file

    with tempfile.TemporaryDirectory() as tmp, AppProcess([sys.executable, "app.py"]) as app:
        bomb, photo = zstack_bomb(Path(tmp) / "bomb.tif"), big_photo(Path(tmp) / "big.jpg")
        hostile, normal = client(app.url), client(app.url)
        start_rss = _rss_mib(app.proc.pid)
        calls: list[dict] = []

        def attack():
            calls.append(_call(hostile, "/zstack_mesh", handle_file(str(bomb))))
            for api, extra in (("/classify", ()), ("/explain", (0.5,)), ("/mesh", ("cam",)), ("/morphology", ())):
                calls.append(_call(hostile, api, handle_file(str(photo)), model, *extra))

        worker = threading.Thread(target=attack)
        worker.start()
        answers = []  # a normal request, again and again while the hostile ones run
        while worker.is_alive() or not answers:
            t0 = time.perf_counter()
            result = normal.predict(handle_file(str(EXAMPLE)), model, api_name="/classify")[2]
            answers.append((result.get("label"), time.perf_counter() - t0))
        worker.join(timeout=600)
        end_rss = _rss_mib(app.proc.pid)
        peak = _peak_rss_mib(app.proc.pid, end_rss)
    return {"command": "python -m bench.app_memory", "start_rss_mib": round(start_rss, 1), "peak_rss_mib": round(peak, 1),
            "end_rss_mib": round(end_rss, 1), "target_peak_mib": TARGET_PEAK_MIB, "hostile_calls": calls,
            "normal_classify_during_attack": {"requests": len(answers), "labels": sorted({a for a, _ in answers}),
                                              "max_seconds": round(max(t for _, t in answers), 2)},
            "met": peak < TARGET_PEAK_MIB and {a for a, _ in answers} == {"neutrophil"}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.app_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="model the requests name (default: %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "app_memory.json", help="results file (default: %(default)s)")
    a = p.parse_args(argv)
    report = run(model=a.model)
    write_json(a.out, report)
    print(json.dumps(report, indent=2))
    return 0 if report["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
