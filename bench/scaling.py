"""Scaling over cores: ``classify --workers N`` and ``archive`` (local pool vs Ray), images/s at each N.

Every scaling run gives each worker one interpreter thread (``--threads 1``), so the speed-up is that of the
processes; one more row shows ``classify --workers 1`` on its default threads (every core) for context.
Each classify and local-archive configuration runs 3 times, interleaved, and the median wall time is kept.

    python -m bench.scaling [--model NAME] [--images N] [--workers 1,2] [--engines local,ray] [--data DIR]

Every run is a child process (``bench/throughput.py``'s runner: wall time around
the whole command, start-up included, and its peak RSS). The classify runs must
print byte-identical JSON lines for every N (their sha256 is compared); the archive
runs write a fresh Parquet dataset each and must hold one row per image. Images
are the model's test split (``--data``; the dataset its JSON names), copied round-robin into
one folder; without the data the model's examples are cycled. Ray rows need ``pip install .[scale]``
and include Ray's own start-up (a local instance, ``ray.init(num_cpus=N)``).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .common import default_data_dir, idleness, interleaved_medians, machine, model_facts, split_or_examples
from .throughput import CliRun, run_cli


@dataclass(frozen=True)
class ScalingRun:
    tool: str  # "classify" or "archive-local" / "archive-ray"
    workers: int
    run: CliRun
    images_per_s: float
    output_sha256: str | None  # classify: sha256 of its stdout; archive: None
    rows: int | None  # archive: rows in the Parquet output


@dataclass(frozen=True)
class ScalingReport:
    model: str
    images: int
    source: str
    runs: tuple[ScalingRun, ...]
    identical_output: bool  # classify: the same JSON lines (order included) for every N
    speedups: dict  # "<tool> <N>/1" -> images/s at N over images/s at 1
    repeats: int = 1  # runs per classify / local-archive configuration (the median-wall one is kept)


def _threads(threads: int | None) -> list:
    return [] if threads is None else ["--threads", threads]


def _classify(model: str, folder: Path, n: int, workers: int, threads: int | None = 1, tool: str = "classify") -> ScalingRun:
    out = Path(tempfile.mkstemp(prefix="hv-scaling-", suffix=".jsonl")[1])
    run = run_cli(["classify", "--model", model, "--workers", workers, *_threads(threads), folder], name=f"{tool}_w{workers}",
                  images=n, shown=["classify", "--model", _shown(model), "--workers", workers, *_threads(threads), "IMAGES_DIR"],
                  stdout_to=out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    out.unlink()
    return ScalingRun(tool, workers, run, n / run.wall_s, digest, None)


def _archive(model: str, folder: Path, n: int, workers: int, engine: str, tmp: Path, threads: int | None = 1) -> ScalingRun:
    import pyarrow.parquet as pq

    output = tmp / f"archive-{engine}-{workers}.parquet"
    if output.is_dir():  # a repeat: start afresh (archive would resume and skip every file)
        shutil.rmtree(output)
    output.unlink(missing_ok=True)
    run = run_cli(["archive", "--model", model, "--engine", engine, "--workers", workers, *_threads(threads), "--input", folder,
                   "--output", output], name=f"archive_{engine}_w{workers}", images=n, timeout_s=900,
                  shown=["archive", "--model", _shown(model), "--engine", engine, "--workers", workers, *_threads(threads),
                         "--input", "IMAGES_DIR", "--output", "OUT.parquet"])
    rows = pq.read_table(output, columns=["path"]).num_rows if output.exists() else 0
    return ScalingRun(f"archive-{engine}", workers, run, n / run.wall_s, None, rows)


def _shown(model: str) -> str:
    return Path(model).name if Path(model).suffix else model


def _median_runs(make, configs: list, repeats: int) -> list[ScalingRun]:
    """Each config run ``repeats`` times, interleaved; the median-wall run of each."""
    return [median for median, _ in interleaved_medians(make, configs, repeats, key=lambda r: r.run.wall_s)]


def run(model: str, sources: list[Path], *, n: int = 1000, workers: tuple[int, ...] = (1, 2),
        engines: tuple[str, ...] = ("local", "ray"), source_name: str = "", repeats: int = 3) -> ScalingReport:
    """``repeats``: runs per classify / local-archive configuration (median wall kept); Ray runs once (its start-up)."""
    from .common import fill_folder

    runs: list[ScalingRun] = []
    with tempfile.TemporaryDirectory(prefix="hv-bench-scaling-") as tmp:
        folder = fill_folder(sources, n, Path(tmp) / "images")
        # Process scaling: one interpreter thread per worker at every N. Context: one worker on the default
        # threads (every core), what `classify --workers 1` does; not part of the speed-ups.
        configs = [(w, 1, "classify") for w in workers] + [(1, None, "classify, default threads")]
        runs += _median_runs(lambda c: _classify(model, folder, n, c[0], threads=c[1], tool=c[2]), configs, repeats)
        for engine in engines:
            runs += _median_runs(lambda w: _archive(model, folder, n, w, engine, Path(tmp)), list(workers),
                                 repeats if engine == "local" else 1)
    base = {r.tool: r.images_per_s for r in runs if r.workers == 1}
    speedups = {f"{r.tool} {r.workers}/1": r.images_per_s / base[r.tool] for r in runs if r.workers != 1 and r.tool in base}
    digests = {r.output_sha256 for r in runs if r.tool == "classify"}
    return ScalingReport(model=model, images=n, source=source_name or f"{len(sources)} distinct images", runs=tuple(runs),
                         identical_output=len(digests) == 1, speedups=speedups, repeats=repeats)


def markdown(rep: dict) -> list[str]:
    out = [f"## Scaling over cores ({rep['images']} images: {rep['source']})", "",
           f"Each classify and local-archive row is the median-wall run of {rep.get('repeats', 1)}, interleaved; `--threads 1` "
           "gives every worker one interpreter thread, so the speed-up is that of the processes.", "",
           "| run | workers | wall s | images/s | rows | peak RSS MiB (parent) |", "|---|---|---|---|---|---|"]
    for r in rep["runs"]:
        c = r["run"]
        rows = r["rows"] if r["rows"] is not None else f"{c['classified']} + {c['errors']} errors"
        out.append(f"| `{c['command']}` | {r['workers']} | {c['wall_s']:.2f} | {r['images_per_s']:.1f} | {rows} | {c['peak_rss_mib']:.0f} |")
    out += ["", "Speed-up: " + ", ".join(f"{k} = **{v:.2f}x**" for k, v in rep["speedups"].items())
            + f"; classify JSON lines identical for every N: **{'yes' if rep['identical_output'] else 'NO'}**.", ""]
    return out


def main(argv=None) -> int:
    from hematovision import load_model
    from hematovision.commands import DEFAULT_MODEL, write_json

    from .report import to_jsonable

    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="model name or .json/.tflite path (default: %(default)s)")
    p.add_argument("--images", type=int, default=1000, help="images per run (default: %(default)s)")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (default: %(default)s)")
    p.add_argument("--engines", default="local,ray", help="archive engines to run, of local,ray ('' for none; default: %(default)s)")
    p.add_argument("--data", type=Path, default=None, help="shared data folder (default: $HEMATOVISION_DATA, else ../shared/data)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "scaling.json",
                   help="results file (default: %(default)s)")
    args = p.parse_args(argv)
    sources, source = split_or_examples(args.data or default_data_dir(), model_facts(load_model(args.model)), args.images)
    before = idleness()
    rep = run(args.model, sources, n=args.images, workers=tuple(int(w) for w in args.workers.split(",")),
              engines=tuple(e for e in args.engines.split(",") if e), source_name=source)
    result = {"command": " ".join(["python -m bench.scaling", *(sys.argv[1:] if argv is None else argv)]),
              "machine": machine(), "idleness": {"start": before, "end": idleness()}, "scaling": rep}
    data = to_jsonable(result)
    write_json(args.out, data)
    idle = all(i["idle"] for i in data["idleness"].values())
    print("\n".join(markdown(data["scaling"]) + [f"Machine idle: {'yes' if idle else 'NO (see idleness in ' + str(args.out) + ')'}."]))
    return 0 if rep.identical_output and all(r.run.exit_code in (0, 1) and not r.run.timed_out for r in rep.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
