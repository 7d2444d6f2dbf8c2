"""``python -m bench``: every benchmark, then ``bench/results/latest.json`` and ``latest.md``.

    python -m bench [--model NAME] [--models-dir DIR] [--data DIR] [--only latency,macs,...] [--quick]

Sections: latency, macs, size, throughput, scaling, app, station (default: all); scaling is
``classify --workers 1,2`` and ``archive`` local/Ray at 1 and 2 workers (Ray rows only with
``pip install .[scale]``; ``python -m bench.scaling`` runs it alone). The
float Keras reference is ``<model>.keras`` beside the model JSON (``--keras`` to
override); without TensorFlow (e.g. on a Raspberry Pi with requirements-edge.txt)
the Keras rows are skipped and the rest still runs. Test images are the test
split of the dataset the model's JSON names (``provenance.data.dataset``) in
``--data`` (default: $HEMATOVISION_DATA, else ../shared/data beside the
checkout); without it the examples/ folder its JSON names (``examples``) is
cycled. A model copied under a new name benchmarks with no code change. Exit
status: 0 when every section ran, 1 when one failed (its error is in the
results), 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from hematovision.commands import DEFAULT_MODEL

from . import report
from .common import ROOT, default_data_dir, example_images, idleness, machine, model_facts, split_or_examples

SECTIONS = ("latency", "macs", "size", "throughput", "scaling", "app", "station")
LATENCY_TARGET_MS = 3.0
SPEEDUP_TARGET = 20.0
WORKERS_TARGET = 1.6  # classify --workers 2 over --workers 1, images/s
TIME_BUDGET_S = 600.0
GRADCAM_RUNS = 50  # timed runs of the GradientTape Grad-CAM rows (about 0.5 s each; the median is stable long before 200)
#: --quick: at most these counts (a smoke run, not figures to publish).
QUICK = {"runs": 20, "warmup": 3, "images": 50, "round_trips": 10, "clients": 2, "requests": 5, "frames": 10}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="model name or .json/.tflite path (default: %(default)s)")
    p.add_argument("--models-dir", type=Path, help="folder of the named models (default: $HEMATOVISION_MODELS, else models/)")
    p.add_argument("--keras", type=Path, help="float Keras reference (default: <model>.keras beside the model JSON)")
    p.add_argument("--data", type=Path, default=None, help="shared data folder (default: $HEMATOVISION_DATA, else ../shared/data)")
    p.add_argument("--only", help=f"comma-separated sections to run, of {','.join(SECTIONS)}")
    p.add_argument("--skip", default="", help="comma-separated sections to skip")
    p.add_argument("--runs", type=int, default=200, help="timed runs per latency row (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=20, help="untimed warm-up runs per latency row (default: %(default)s)")
    p.add_argument("--images", type=int, default=1000, help="images for the CLI throughput run (default: %(default)s)")
    p.add_argument("--round-trips", type=int, default=200, help="sequential app requests (default: %(default)s)")
    p.add_argument("--clients", type=int, default=8, help="concurrent app clients (default: %(default)s)")
    p.add_argument("--requests", type=int, default=50, help="requests per app client (default: %(default)s)")
    p.add_argument("--frames", type=int, default=200, help="station fields (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="small counts everywhere (a smoke run, not figures to publish): "
                   + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results folder (default: %(default)s)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    chosen = [s.strip() for s in (args.only or ",".join(SECTIONS)).split(",") if s.strip()]
    bad = [s for s in chosen + [s.strip() for s in args.skip.split(",") if s.strip()] if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in chosen if s not in {x.strip() for x in args.skip.split(",")}]
    if args.quick:
        for name, most in QUICK.items():
            setattr(args, name, min(getattr(args, name), most))
    return args


def command_line(argv: list[str] | None) -> str:
    return " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    if args.models_dir:
        os.environ["HEMATOVISION_MODELS"] = str(args.models_dir.resolve())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from hematovision import load_model

    print(f"bench: sections {', '.join(args.sections)}; checking that the machine is idle...", file=sys.stderr, flush=True)
    results: dict = {"command": command_line(argv), "machine": machine(), "idleness": {"start": idleness()},
                     "errors": {}, "skipped": {}}
    clf = load_model(args.model)
    keras_path = _keras_path(args, clf, results["skipped"])
    data = args.data or default_data_dir()
    facts = model_facts(clf)
    test_images, source = split_or_examples(data, facts, max(args.images, args.clients * args.requests, args.round_trips))
    examples = example_images(facts.examples)
    sections = {
        "latency": lambda: _latency(clf, args, keras_path, examples),
        "macs": lambda: _macs(clf, keras_path, results),
        "size": lambda: _size(clf),
        "throughput": lambda: _throughput(args, test_images, source),
        "scaling": lambda: _scaling(args, test_images, source),
        "app": lambda: _app(args, facts.name, test_images),
        "station": lambda: _station(args, data),
    }
    for section in args.sections:
        _run_section(section, sections[section], results)
    results["idleness"]["end"] = idleness()
    results["idle"] = all(i.idle for i in results["idleness"].values())
    results["elapsed_s"] = time.perf_counter() - t_start
    results["checks"] = checks(results)
    jpath, mpath = report.write(results, args.out)
    print(mpath.read_text(encoding="utf-8"))
    print(f"bench: wrote {jpath} and {mpath}", file=sys.stderr)
    return 1 if results["errors"] else 0


def _keras_path(args, clf, skipped: dict) -> Path | None:
    """The float Keras reference to time against, or None (and why, in ``skipped``)."""
    keras_path = args.keras or clf.spec.json_path.with_suffix(".keras")
    if not keras_path.exists():
        skipped["keras rows"] = f"{keras_path} not found"
        return None
    if not (_has("tensorflow") and _has("keras")):
        skipped["keras rows"] = "TensorFlow not installed"
        return None
    return keras_path


def _run_section(section: str, measure, results: dict) -> None:
    """Run one section into ``results``: its report, the reason it was skipped (a str), or its error."""
    t0 = time.perf_counter()
    print(f"bench: {section}...", file=sys.stderr, flush=True)
    try:
        value = measure()
    except Exception as exc:  # noqa: BLE001 - one broken section is reported, the others still run
        results["errors"][section] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        traceback.print_exc(file=sys.stderr)
        return
    if isinstance(value, str):
        results["skipped"][section] = value
    else:
        results[section] = value
    print(f"bench: {section} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _latency(clf, args, keras_path, images):
    from . import latency

    return latency.run(clf, images, keras_path=keras_path, runs=args.runs, warmup=args.warmup,
                       gradcam_runs=min(args.runs, GRADCAM_RUNS))


def _macs(clf, keras_path, results):
    from . import macs

    lat = results.get("latency")
    here = lat.timing("tflite_net").median_ms if lat is not None and lat.timing("tflite_net") else None
    return macs.run(clf.spec.tflite_path, keras_path=keras_path, here_ms=here, model_name=clf.spec.name,
                    views_per_image=model_facts(clf).views)


def _size(clf):
    from . import size

    return size.run(clf.spec.tflite_path.parent, [ROOT / "requirements-edge.txt", ROOT / "requirements.txt", ROOT / "requirements-dev.txt"])


def _throughput(args, images, source):
    from . import throughput

    return throughput.run(args.model, images, n=args.images, source_name=source)


def _scaling(args, images, source):
    from . import scaling

    engines = ("local", "ray") if _has("ray") else ("local",)
    return scaling.run(args.model, images, n=args.images, workers=(1, 2), engines=engines, source_name=source)


def _app(args, name, images):
    from hematovision.registry import model_names

    if not (ROOT / "app.py").exists():
        return "app.py is not in this checkout"
    served = model_names()  # the app's models: the models folder's, then the Hub's product models
    if name not in served:
        return f"the app serves the models of the models folder ({', '.join(served)}), not {name!r}; copy its files there"
    from . import app_load

    return app_load.run(images, args=(name,), round_trips=args.round_trips, clients=args.clients, requests=args.requests)


def _station(args, data):
    from . import station_fields

    rep = station_fields.run(model=args.model, images=Path(data) / "bccd" / "images", frames=args.frames)
    return rep if rep.available or rep.output else rep.reason


def checks(results: dict) -> list[report.Check]:
    out = []
    lat = results.get("latency")
    if lat is not None:
        rows = [("tflite_net", f"int8 `{lat.model}` network, one pass, median, 1 thread")]
        if lat.tta_views > 1:
            rows.append(("tflite_forward_1t", f"int8 `{lat.model}` network per image as shipped ({lat.tta_views} TTA views, one batch invoke), median, 1 thread"))
        for name, what in rows:
            t = lat.timing(name)
            if t:
                out.append(report.Check(what, f"<= {LATENCY_TARGET_MS:g} ms", f"{t.median_ms:.2f} ms", t.median_ms <= LATENCY_TARGET_MS))
        for den, what in (("tflite_net", "one pass"), ("tflite_forward", f"per image, {lat.tta_views} TTA views")):
            r = next((r for r in lat.ratios if r.name == f"keras_predict/{den}"), None)
            if r:
                out.append(report.Check(f"speed-up vs float Keras `model.predict` ({what})", f">= {SPEEDUP_TARGET:g}x",
                                        f"{r.value:.1f}x", r.value >= SPEEDUP_TARGET))
        r = next((r for r in lat.ratios if r.name == "keras_predict_path/tflite_predict"), None)
        if r:
            out.append(report.Check("whole path `clf.predict(path)` with CAM vs decode + resize + Keras `model.predict`",
                                    f">= {SPEEDUP_TARGET:g}x", f"{r.value:.1f}x", r.value >= SPEEDUP_TARGET))
    sc = results.get("scaling")
    if sc is not None and "classify 2/1" in sc.speedups:
        out.append(report.Check(f"`classify --workers 2` vs `--workers 1`, {sc.images} images", f">= {WORKERS_TARGET:g}x images/s",
                                f"{sc.speedups['classify 2/1']:.2f}x", sc.speedups["classify 2/1"] >= WORKERS_TARGET))
        out.append(report.Check("`classify` JSON lines, workers 1 vs 2", "identical", "identical" if sc.identical_output else "differ",
                                sc.identical_output))
    app = results.get("app")
    if app is not None and app.load is not None:
        out.append(report.Check(f"app under load ({app.load.clients} clients x {app.load.requests_per_client})", "0 errors",
                                f"{app.load.errors} errors", app.load.errors == 0))
    out.append(report.Check("`python -m bench` wall time", f"< {TIME_BUDGET_S:g} s", f"{results['elapsed_s']:.0f} s",
                            results["elapsed_s"] < TIME_BUDGET_S))
    return out


if __name__ == "__main__":
    sys.exit(main())
