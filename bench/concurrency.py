"""What the app's queue concurrency and the station's threads are chosen from: both measured.

    python -m bench.concurrency [--limits 1,2,4] [--clients 8] [--requests 25] [--station-threads 1,2] [--frames 200]

App: ``python app.py`` is started once per queue limit (``HEMATOVISION_QUEUE_CONCURRENCY=L``, read by
``hematovision.web.queue``) and loaded by ``--clients`` x ``--requests`` ``/classify`` requests with distinct
images (``bench/app_load.py``): requests/s, median and p95 latency, errors. Station: ``bench.station_bench``
on the BCCD fields with ``--threads T`` (interpreter and OpenCV threads): fields/s. The best of each
(app: most requests/s, then the lower p95; station: most fields/s) is what ``hematovision.web.queue.QUEUE_CONCURRENCY`` and
the station's default threads should be; ``chosen`` in the result says whether they are.
Results: ``bench/results/concurrency.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .common import default_data_dir, idleness, interleaved_medians, machine, model_facts, split_or_examples

RESULTS = Path(__file__).resolve().parent / "results"


def _medians(make, configs: list, repeats: int, key: str) -> list[dict]:
    """Each config ``repeats`` times, interleaved; the run with the median ``key``, with every repeat's value beside it."""
    return [{**median, f"{key}_runs": [r[key] for r in runs]}
            for median, runs in interleaved_medians(make, configs, repeats, key=lambda r: r[key] or 0.0)]


def _app_once(images: list[Path], limit: int, *, clients: int, requests: int) -> dict:
    from . import app_load

    env = {**os.environ, "HEMATOVISION_QUEUE_CONCURRENCY": str(limit)}
    load = app_load.run(images, env=env, round_trips=0, warmup=3, clients=clients, requests=requests).load
    print(f"app, queue limit {limit}: {load.requests_per_s:.2f} requests/s, {load.errors} errors", file=sys.stderr)
    return {"limit": limit, "requests_per_s": load.requests_per_s, "ok": load.ok, "errors": load.errors,
            "median_ms": load.latency.median_ms if load.latency else None, "p95_ms": load.latency.p95_ms if load.latency else None}


def app_rows(images: list[Path], limits: tuple[int, ...], *, clients: int, requests: int, repeats: int) -> list[dict]:
    """Each limit ``repeats`` times, the limits interleaved; the median-throughput run of each."""
    return _medians(lambda limit: _app_once(images, limit, clients=clients, requests=requests), list(limits), repeats,
                    "requests_per_s")


def _station_once(bccd: Path, threads: int, *, frames: int) -> dict:
    from . import station_fields

    rep = station_fields.run(model=None, images=bccd, frames=frames, threads=threads)
    print(f"station, {threads} thread(s): {rep.fields_per_s} fields/s", file=sys.stderr)
    return {"threads": threads, "fields_per_s": rep.fields_per_s, "cells_per_s": rep.cells_per_s, "ok": rep.available,
            "reason": rep.reason}


def station_rows(bccd: Path, threads: tuple[int, ...], *, frames: int, repeats: int) -> list[dict]:
    """Each thread count ``repeats`` times, interleaved; the median-throughput run of each."""
    return _medians(lambda t: _station_once(bccd, t, frames=frames), list(threads), repeats, "fields_per_s")


def best_limit(rows: list[dict]) -> int | None:
    good = [r for r in rows if r["errors"] == 0 and r["ok"]]
    return max(good, key=lambda r: (round(r["requests_per_s"], 1), -(r["p95_ms"] or 0)))["limit"] if good else None


def best_threads(rows: list[dict]) -> int | None:
    good = [r for r in rows if r["ok"] and r["fields_per_s"]]
    return max(good, key=lambda r: (r["fields_per_s"], -r["threads"]))["threads"] if good else None


def _runs(row: dict, key: str) -> str:
    values = row.get(f"{key}_runs") or []
    return " [" + ", ".join(f"{v:.1f}" for v in values if v is not None) + "]" if len(values) > 1 else ""


def markdown(data: dict) -> list[str]:
    out = ["## App queue concurrency and station threads", "", f"Command: `{data['command']}`.", "",
           "Each row is the median of the repeats (interleaved); every repeat's figure is in brackets.", "",
           "| app queue limit | requests/s | median ms | p95 ms | errors |", "|---|---|---|---|---|"]
    out += [f"| {r['limit']} | {r['requests_per_s']:.2f}{_runs(r, 'requests_per_s')} | {r['median_ms']:.0f} | {r['p95_ms']:.0f} | "
            f"{r['errors']} |" for r in data["app"] if r["median_ms"] is not None]
    out += ["", "| station threads | fields/s | cells/s |", "|---|---|---|"]
    out += [f"| {r['threads']} | {r['fields_per_s']}{_runs(r, 'fields_per_s')} | {r['cells_per_s']} |" for r in data["station"]]
    c = data["chosen"]
    out += ["", f"Best: app queue limit {c['app_best']} (QUEUE_CONCURRENCY in hematovision/web/queue.py = {c['app_default']}), station "
            f"{c['station_best']} thread(s) (station default: {c['station_default']})."]
    return out


def main(argv=None) -> int:
    from hematovision import load_model
    from hematovision.commands import DEFAULT_MODEL, write_json
    from hematovision.runtime import available_cores

    from hematovision.web.queue import QUEUE_CONCURRENCY
    from .report import to_jsonable

    p = argparse.ArgumentParser(prog="python -m bench.concurrency", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limits", default="1,2,4", help="app queue limits to measure (default: %(default)s)")
    p.add_argument("--clients", type=int, default=8, help="concurrent app clients (default: %(default)s)")
    p.add_argument("--requests", type=int, default=25, help="requests per client (default: %(default)s)")
    p.add_argument("--station-threads", default="1,2", help="station thread counts to measure (default: %(default)s)")
    p.add_argument("--frames", type=int, default=200, help="station fields per run (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="runs per configuration, interleaved; the median is kept (default: %(default)s)")
    p.add_argument("--data", type=Path, default=None, help="shared data folder (default: $HEMATOVISION_DATA, else ../shared/data)")
    p.add_argument("--out", type=Path, default=RESULTS / "concurrency.json", help="results file (default: %(default)s)")
    args = p.parse_args(argv)
    data_dir = args.data or default_data_dir()
    images, _ = split_or_examples(data_dir, model_facts(load_model(DEFAULT_MODEL)), args.clients * args.requests + 3)
    before = idleness()
    app = app_rows(images, tuple(int(v) for v in args.limits.split(",")), clients=args.clients, requests=args.requests,
                   repeats=args.repeats)
    station = station_rows(data_dir / "bccd" / "images", tuple(int(v) for v in args.station_threads.split(",")),
                           frames=args.frames, repeats=args.repeats)
    chosen = {"app_best": best_limit(app), "app_default": QUEUE_CONCURRENCY, "station_best": best_threads(station),
              "station_default": available_cores()}
    data = to_jsonable({"command": " ".join(["python -m bench.concurrency", *(sys.argv[1:] if argv is None else argv)]),
                        "machine": machine(), "idleness": {"start": before, "end": idleness()}, "app": app,
                        "station": station, "chosen": chosen})
    write_json(args.out, data)
    args.out.with_suffix(".md").write_text("\n".join(markdown(data)) + "\n", encoding="utf-8")
    print("\n".join(markdown(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
