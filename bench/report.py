"""Results -> JSON and a Markdown table (the one the README shows)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hematovision.commands import write_json


@dataclass(frozen=True)
class Check:
    name: str
    target: str
    measured: str
    ok: bool


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _f(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _mib(b: int) -> str:
    return f"{b / 2**20:.1f} MiB"


def markdown(results: dict) -> str:
    """Render the results dict (as written to latest.json) as Markdown."""
    out = _header(results) + _checks(results.get("checks"))
    for key, section in SECTIONS:
        value = results.get(key)
        if isinstance(value, dict):
            out += section(value)
    out += _listed("Sections that failed", results.get("errors")) + _listed("Sections not run", results.get("skipped"))
    return "\n".join(out)


def _idle_text(results: dict) -> str:
    if results["idle"]:
        return "yes"
    return "NO (" + "; ".join(
        f"{'training job running' if i.get('training_running') else ''} load {i['load_average'][0]}"
        + ("".join(f", pid {b['pid']} {b['cpu_percent']}% {b['command'][:50]}" for b in i["busy"][:2]))
        for i in results["idleness"].values()) + ")"


def _header(results: dict) -> list[str]:
    m = results["machine"]
    v = m["versions"]
    return [
        "# HematoVision benchmarks", "",
        f"Measured **{m['date_utc']}** on {m['cpu']} ({m['logical_cpus']} logical CPUs, {m['memory_gib']} GiB RAM), "
        f"{m['system']}, Python {m['python']}; " + ", ".join(f"{k} {v[k]}" for k in ("ai-edge-litert", "tensorflow", "gradio") if k in v)
        + f". Machine idle during the run: **{_idle_text(results)}**.", "",
        f"Reproduce: `{results['command']}` (all sections took {results['elapsed_s']:.0f} s).", "",
    ]


def _checks(checks: list | None) -> list[str]:
    if not checks:
        return []
    out = ["| check | target | measured | met |", "|---|---|---|---|"]
    out += [f"| {c['name']} | {c['target']} | {c['measured']} | {'yes' if c['ok'] else '**no**'} |" for c in checks]
    return out + [""]


def _timing_table(timings: list[dict]) -> list[str]:
    return ["| what | median ms | p95 ms |", "|---|---|---|"] + [
        f"| {t['label']} | {_f(t['median_ms'])} | {_f(t['p95_ms'])} |" for t in timings] + [""]


def _latency(lat: dict) -> list[str]:
    if "timings" not in lat:
        return []
    tta = (f" The shipped model uses test-time augmentation ({lat['tta']}): {lat['tta_views']} views per image, run as one "
           f"batch-{lat['tta_views']} invoke in `clf.forward` and `clf.predict` (the `8invokes` rows: one invoke per view, "
           "the previous path); the float Keras rows do one pass, as a typical app does."
           if (lat.get("tta_views") or 1) > 1 else "")
    out = [f"## Latency per image: `{lat['model']}`", "",
           f"{lat['images']} images (the same for every row), {lat['runs']} timed runs each after {lat['warmup']} warm-up runs, "
           "one process. Network rows take a prepared tensor; path rows start from the JPEG file." + tta, ""]
    out += _timing_table(lat["timings"])
    if lat["gradcam"]:
        out += ["### Grad-CAM", "", "Timed runs per row: " + ", ".join(f"{g['name']} {g['n']}" for g in lat["gradcam"]) + ".", ""]
        out += _timing_table(lat["gradcam"])
    if lat["ratios"]:
        out += ["| ratio (median / median) | times |", "|---|---|"]
        out += [f"| `{r['numerator']}` / `{r['denominator']}` | {_f(r['value'], 1)}x |" for r in lat["ratios"]]
        out.append("")
    return out + _agreement(lat)


def _agreement(lat: dict) -> list[str]:
    extra = []
    if lat.get("top1_agreement") is not None:
        extra.append(f"int8 TFLite and float Keras agree on the top class for {100 * lat['top1_agreement']:.0f}% of these images")
    if lat.get("cam_correlation") is not None:
        extra.append(f"numpy CAM (int8) vs GradientTape Grad-CAM (float): mean Pearson r = {lat['cam_correlation']:.3f}")
    return ["; ".join(extra) + ".", ""] if extra else []


def _throughput(thr: dict) -> list[str]:
    if "runs" not in thr:
        return []
    out = [f"## CLI batch throughput ({thr['images']} images: {thr['source']})", "",
           "| run | images | errors | wall s | images/s | peak RSS MiB |", "|---|---|---|---|---|---|"]
    out += [f"| `{r['command']}` | {r['images']} | {r['errors']} | "
            f"{_f(r['wall_s'])} | {_f(r['images'] / r['wall_s'] if r['wall_s'] else None, 1)} | {_f(r['peak_rss_mib'], 0)} |"
            for r in thr["runs"]]
    return out + ["", f"Start-up (interpreter + imports + model load, one image): {_f(thr['startup_s'])} s; "
                  f"steady rate without it: **{_f(thr['steady_images_per_s'], 0)} images/s**.", ""]


def _scaling(sc: dict) -> list[str]:
    if "runs" not in sc:
        return []
    from .scaling import markdown as scaling_markdown

    return scaling_markdown(sc)


def _app(app: dict) -> list[str]:
    if "endpoint" not in app:
        return []
    rt, load = app.get("round_trip"), app.get("load")
    out = [f"## App (`{app['command']}`, `{app['endpoint']}` via gradio_client, 127.0.0.1)", "",
           "| what | value |", "|---|---|",
           f"| start-up to listening | {_f(app['startup_s'], 1)} s |"]
    if rt:
        out.append(f"| round trip, 1 client ({rt['n']} requests, upload + classify) | median {_f(rt['median_ms'], 1)} ms, p95 {_f(rt['p95_ms'], 1)} ms |")
    if load:
        lt = load.get("latency") or {}
        out += [f"| load: {load['clients']} clients x {load['requests_per_client']} requests | {load['ok']} ok, **{load['errors']} errors**, "
                f"{_f(load['requests_per_s'], 1)} requests/s |",
                f"| latency under load | median {_f(lt.get('median_ms'), 1)} ms, p95 {_f(lt.get('p95_ms'), 1)} ms |"]
    out += [f"| RSS after start / before load / after load | {_f(app['rss_after_start_mib'], 0)} / {_f(app['rss_before_load_mib'], 0)} / "
            f"{_f(app['rss_after_load_mib'], 0)} MiB (growth under load {_f(app['rss_growth_mib'], 1)} MiB) |",
            f"| peak RSS (VmHWM) | {_f(app['peak_rss_mib'], 0)} MiB |", ""]
    if load and load["error_samples"]:
        out += ["Errors: " + "; ".join(f"`{e}`" for e in load["error_samples"]), ""]
    return out


def _station(st: dict) -> list[str]:
    if "available" not in st:
        return []
    if not st["available"]:
        return ["## Station", "", f"Not measured: {st['reason']}.", ""]
    return ["## Station", "",
            f"`{st['command']}`: **{_f(st['fields_per_s'], 1)} fields/s**, {_f(st['cells_per_s'], 1)} cells/s "
            f"({st['fields']} fields, {st['cells']} cells, {_f(st['seconds'])} s).", "",
            "```", *st["output"], "```", ""]


def _size(size: dict) -> list[str]:
    if "models" not in size:
        return []
    out = ["## Size", "", "| file or requirements | size | distributions | largest |", "|---|---|---|---|"]
    out += [f"| `{size['models_dir']}/{f['name']}` | {f['bytes'] / 1024:.0f} KiB | | |" for f in size["models"]]
    out += [f"| `{i['requirements']}` installed | {_mib(i['bytes'])} | {i['distributions']} | "
            + ", ".join(f"{d['name']} {d['bytes'] / 2**20:.0f}" for d in i["largest"][:4]) + " MiB"
            + (f" (not installed here: {', '.join(i['missing'])})" if i["missing"] else "") + " |" for i in size["installs"]]
    return out + [""]


def _macs(mac: dict) -> list[str]:
    if "tflite_macs" not in mac:
        return []
    ops = ", ".join(f"{o['op']} x{o['count']}: {o['macs'] / 1e6:.2f} M" for o in mac["by_op"])
    out = [f"## MACs: `{mac['model']}`", "",
           f"**{mac['tflite_macs'] / 1e6:.2f} M MACs** per network pass from the .tflite ({ops}); "
           + (f"Keras layers analytically: {mac['keras_macs'] / 1e6:.2f} M; " if mac.get("keras_macs") else "")
           + f"{mac['parameters'] / 1e6:.2f} M weights in those ops."
           + (f" Per image with {mac['views_per_image']} TTA passes: {mac['tflite_macs'] * mac['views_per_image'] / 1e6:.1f} M MACs."
              if mac.get("views_per_image", 1) > 1 else "")
           + (f" Here: {mac['here_macs_per_s'] / 1e9:.1f} G MACs/s effective at {_f(mac['here_ms'])} ms (1 thread)." if mac.get("here_macs_per_s") else ""),
           ""]
    return out + _pi_table(mac) + [""]


def _pi_table(mac: dict) -> list[str]:
    board = "| board (estimate, see bench/macs.py for the assumptions) |"
    per_image = {p["board"]: p for p in mac.get("pi_per_image") or []}
    if not per_image:
        return [f"{board} network latency |", "|---|---|"] + [
            f"| {p['board']} | {_f(p['low_ms'])} - {_f(p['high_ms'])} ms |" for p in mac["pi"]]
    return [f"{board} one network pass | per image ({mac['views_per_image']} TTA passes) |", "|---|---|---|"] + [
        f"| {p['board']} | {_f(p['low_ms'])} - {_f(p['high_ms'])} ms | {_f(per_image[p['board']]['low_ms'], 1)} - "
        f"{_f(per_image[p['board']]['high_ms'], 1)} ms |" for p in mac["pi"]]


def _listed(title: str, items: dict | None) -> list[str]:
    if not items:
        return []
    return [f"## {title}", ""] + [f"- {k}: {v}" for k, v in items.items()] + [""]


#: The sections of latest.md, in order: results key -> its renderer (each returns [] for a value it cannot render).
SECTIONS = (("latency", _latency), ("throughput", _throughput), ("scaling", _scaling), ("app", _app),
            ("station", _station), ("size", _size), ("macs", _macs))


def write(results: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out_dir / "latest.json", out_dir / "latest.md"
    write_json(jpath, to_jsonable(results))
    mpath.write_text(markdown(json.loads(jpath.read_text(encoding="utf-8"))) + "\n", encoding="utf-8")
    return jpath, mpath
