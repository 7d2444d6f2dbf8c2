"""Shared pieces of the benchmarks: timing statistics, the machine description, idleness, test images."""

from __future__ import annotations

import csv
import datetime as dt
import importlib.metadata as md
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
#: Packages whose versions are recorded with every result.
VERSIONED = ("numpy", "opencv-python-headless", "pillow", "ai-edge-litert", "tensorflow", "keras", "gradio", "gradio-client")


@dataclass(frozen=True)
class Timing:
    """Latency statistics of one measured operation, in milliseconds."""

    name: str  # stable key, e.g. "tflite_net"
    label: str  # what was measured, for the table
    n: int
    median_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float

    @classmethod
    def from_samples(cls, name: str, label: str, samples_s: list[float] | np.ndarray) -> "Timing":
        ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
        return cls(name=name, label=label, n=int(ms.size), median_ms=float(np.median(ms)),
                   p95_ms=float(np.percentile(ms, 95)), mean_ms=float(ms.mean()), min_ms=float(ms.min()))


def time_calls(fn: Callable[[int], object], *, runs: int, warmup: int) -> list[float]:
    """Call ``fn(i)`` ``warmup`` times untimed, then ``runs`` times; return each call's seconds."""
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(runs):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def measure(name: str, label: str, fn: Callable[[int], object], *, runs: int, warmup: int) -> Timing:
    return Timing.from_samples(name, label, time_calls(fn, runs=runs, warmup=warmup))


@dataclass(frozen=True)
class BusyProcess:
    """A process that used the CPU while the machine was sampled (it makes the figures suspect)."""

    pid: int
    cpu_percent: float
    command: str


@dataclass(frozen=True)
class Idleness:
    """Whether other processes used the CPU while the benchmark ran (sampled before and after)."""

    idle: bool
    load_average: tuple[float, float, float]
    busy: tuple[BusyProcess, ...]
    training_running: bool


def interleaved_medians(make: Callable, configs: list, repeats: int, *, key: Callable) -> list[tuple[object, list]]:
    """Each config run ``repeats`` times, the configs interleaved (drift hits all alike); per config, in order,
    (the run with the median ``key``, every run)."""
    done: list[list] = [[] for _ in configs]
    for _ in range(repeats):
        for runs, config in zip(done, configs):
            runs.append(make(config))
    return [(sorted(runs, key=key)[len(runs) // 2], runs) for runs in done]


def idleness(sample_s: float = 1.0, *, busy_percent: float = 15.0) -> Idleness:
    """Sample every other process's CPU use for ``sample_s`` seconds; busy ones make the machine not idle."""
    import psutil

    mine = {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}
    procs = []
    for p in psutil.process_iter(["pid", "cmdline", "name"]):
        if p.info["pid"] in mine:
            continue
        try:
            p.cpu_percent(None)
            procs.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    time.sleep(sample_s)
    busy, training = [], False
    for p in procs:
        try:
            cpu = p.cpu_percent(None)
            cmd = " ".join(p.info["cmdline"] or [p.info["name"] or "?"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        training = training or "training.train" in cmd
        if cpu >= busy_percent:
            busy.append(BusyProcess(pid=p.info["pid"], cpu_percent=round(cpu, 1), command=cmd[:120]))
    load = tuple(round(v, 2) for v in os.getloadavg()) if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return Idleness(idle=not busy and not training, load_average=load, busy=tuple(busy), training_running=training)


@dataclass(frozen=True)
class Machine:
    date_utc: str
    system: str
    cpu: str
    logical_cpus: int
    memory_gib: float
    python: str
    versions: dict[str, str]


def _cpu_name() -> str:
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
    except OSError:
        fields = {}
    fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
    for key in ("model name", "hardware", "cpu model"):  # x86; Raspberry Pi / other ARM boards
        if fields.get(key):
            return fields[key]
    return platform.processor() or platform.machine()


def machine() -> Machine:
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    try:
        import psutil

        mem = psutil.virtual_memory().total / 2**30
    except ImportError:
        mem = float("nan")
    return Machine(
        date_utc=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        system=f"{platform.system()} {platform.release()} {platform.machine()}",
        cpu=_cpu_name(),
        logical_cpus=os.cpu_count() or 0,
        memory_gib=round(mem, 1),
        python=platform.python_version(),
        versions=versions,
    )


@dataclass(frozen=True)
class ModelFacts:
    """What the benchmarks need to know of a model, read from its JSON (never guessed from its name)."""

    name: str
    dataset: str | None  # the <data>/ folder of its training data (``provenance.data.dataset``); None: the JSON names none
    examples: str  # the examples/ folder of its images (``examples``, else the model's name)
    views: int  # network passes per image (8 with dihedral test-time augmentation)


def model_facts(clf) -> ModelFacts:
    """The :class:`ModelFacts` of a loaded classifier: a model copied under a new name benchmarks unchanged."""
    spec = clf.spec
    provenance = spec.raw.get("provenance") if isinstance(spec.raw.get("provenance"), dict) else {}
    data = provenance.get("data") if isinstance(provenance.get("data"), dict) else {}
    dataset = spec.raw.get("dataset") or data.get("dataset")
    return ModelFacts(name=spec.name, dataset=str(dataset) if dataset else None, examples=spec.examples or spec.name,
                      views=len(getattr(clf, "views", ())) or 1)


def split_or_examples(data_dir: Path | None, facts: ModelFacts, n: int) -> tuple[list[Path], str]:
    """Up to ``n`` images of the model's test split, else its examples/ (cycled by the callers); and where they come from."""
    images = split_images(data_dir, facts.dataset, n) if facts.dataset else []
    if images:
        return images, f"{facts.dataset} test split from {data_dir}"
    why = f"{data_dir}/{facts.dataset} not found" if facts.dataset else f"the {facts.name} JSON names no provenance.data.dataset"
    return example_images(facts.examples), f"examples/ images cycled ({why})"


def example_images(model_name: str) -> list[Path]:
    """The repo's example images for a model (examples/<name>/*.jpg), else every example."""
    folder = EXAMPLES / model_name
    files = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    return files or sorted(EXAMPLES.glob("*/*.jpg"))


def default_data_dir() -> Path:
    """The shared data folder: $HEMATOVISION_DATA, else ../shared/data beside the checkout (as in the tests)."""
    return Path(os.environ.get("HEMATOVISION_DATA", ROOT.parent / "shared" / "data"))


def split_images(data_dir: Path | None, dataset: str, n: int) -> list[Path]:
    """Up to ``n`` test-split images of ``dataset`` (``<data>/<dataset>/splits.csv``), spread over the classes.

    Returns [] when the data is absent. The order is deterministic: round-robin over the classes.
    """
    if data_dir is None:
        return []
    splits = Path(data_dir) / dataset / "splits.csv"
    if not splits.exists():
        return []
    by_label: dict[str, list[Path]] = {}
    with open(splits, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("split") == "test":
                path = splits.parent / row["path"]
                if not path.exists():
                    path = splits.parent / "images" / row["label"] / Path(row["path"]).name
                by_label.setdefault(row["label"], []).append(path)
    queues = [sorted(v) for _, v in sorted(by_label.items())]
    out: list[Path] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return [p for p in out if p.exists()]


def fill_folder(sources: list[Path], n: int, dest: Path) -> Path:
    """Copy ``n`` images into ``dest`` (cycling through ``sources`` if there are fewer); return ``dest``."""
    if not sources:
        raise ValueError("no source images to fill the folder with")
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = sources[i % len(sources)]
        shutil.copyfile(src, dest / f"{i:05d}_{src.stem}{src.suffix.lower()}")
    return dest
