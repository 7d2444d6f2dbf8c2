"""Sizes: every shipped ``.tflite``, and what each requirements file installs.

Install size, without network: the requirements file is parsed (``-r`` includes
followed), each named distribution and its dependencies (``Requires-Dist``
whose markers hold here, extras not requested are left out) are looked up
among the *installed* distributions with :mod:`importlib.metadata`, and the
sizes of the files in their RECORD are summed. Python itself is not counted.
A requirement not installed here is listed as missing (its size unknown).
"""

from __future__ import annotations

import importlib.metadata as md
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelFile:
    """A shipped .tflite and its size."""

    name: str
    bytes: int


@dataclass(frozen=True)
class Distribution:
    """One installed distribution and its size on disk."""

    name: str
    version: str
    bytes: int


@dataclass(frozen=True)
class InstallSize:
    """What a requirements file installs: its distributions (includes followed) and their size."""

    requirements: str
    direct: tuple[str, ...]
    distributions: int
    bytes: int
    largest: tuple[Distribution, ...]
    missing: tuple[str, ...]


@dataclass(frozen=True)
class SizeReport:
    """The shipped models' files and the installed size of each requirements file."""

    models_dir: str
    models: tuple[ModelFile, ...]
    installs: tuple[InstallSize, ...]


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(path: Path, _seen: set | None = None) -> list[tuple[str, frozenset[str]]]:
    """``(name, extras)`` of each requirement in a pip requirements file, following ``-r`` includes."""
    from packaging.requirements import InvalidRequirement, Requirement

    seen = _seen if _seen is not None else set()
    path = Path(path).resolve()
    if path in seen:
        return []
    seen.add(path)
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            out += requirement_names(path.parent / line.split(None, 1)[1], seen)
            continue
        if line.startswith("-"):
            continue  # other pip options
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is None or req.marker.evaluate():
            out.append((_canon(req.name), frozenset(req.extras)))
    return out


def _dist_bytes(dist: md.Distribution) -> int:
    total = 0
    for f in dist.files or ():
        try:
            total += Path(dist.locate_file(f)).stat().st_size
        except OSError:
            continue
    return total


def install_size(requirements: Path, *, top: int = 5) -> InstallSize:
    from packaging.requirements import InvalidRequirement, Requirement

    direct = requirement_names(requirements)
    todo = list(direct)
    found: dict[str, md.Distribution] = {}
    missing: list[str] = []
    while todo:
        name, extras = todo.pop()
        if name in found or name in missing:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            missing.append(name)
            continue
        found[name] = dist
        for text in dist.requires or ():
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((_canon(req.name), frozenset(req.extras)))
    sizes = sorted((Distribution(n, d.version, _dist_bytes(d)) for n, d in found.items()), key=lambda d: -d.bytes)
    return InstallSize(requirements=requirements.name, direct=tuple(sorted({n for n, _ in direct})), distributions=len(sizes),
                       bytes=sum(d.bytes for d in sizes), largest=tuple(sizes[:top]), missing=tuple(sorted(missing)))


def run(models_dir: Path, requirements: list[Path]) -> SizeReport:
    models = tuple(ModelFile(p.name, p.stat().st_size) for p in sorted(Path(models_dir).glob("*.tflite")))
    return SizeReport(models_dir=Path(models_dir).name, models=models, installs=tuple(install_size(r) for r in requirements if r.exists()))
