"""Where a lab model's files go: a plain name, never over another model, all files or none.

``adapt`` (and ``scope``) write OUT/<name>.json beside its .tflite, .head.npz and .ood.npz. A lab
re-adapting (more verified cells) replaces its own earlier adaptation (a scope, its earlier scope); anything else
already in OUT under those names (a shipped model, another lab's files, a model
whose JSON is gone) is refused, because nothing already saved may be lost. The
files are first written to a hidden folder inside OUT and moved into place only
when all of them are complete (the JSON last), so a failed run leaves OUT as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import HematoVisionError

#: A model name: letters, digits, - and _, starting with a letter or digit (it becomes file names).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: The files of one model in a models folder, by suffix after its name.
MODEL_SUFFIXES = (".tflite", ".head.npz", ".ood.npz", ".json")


class ModelNameError(HematoVisionError, ValueError):
    """The adapted model's name cannot be used as a file name in the output folder."""


class ModelFilesExistError(HematoVisionError, FileExistsError):
    """Writing the adapted model would replace files that are not an earlier adaptation."""


def check_name(name: str) -> str:
    """``name`` if it is a plain model name, else :class:`ModelNameError` saying what is allowed."""
    if not MODEL_NAME.fullmatch(name or ""):
        raise ModelNameError(f"{str(name)[:40]!r} is not a usable model name: letters, digits, - and _ (at most 64, "
                             "no folders or dots), e.g. wbc-lab.")
    return name


def read_lab_model(json_path: Path, *, kind: str = "adaptation") -> dict | None:
    """The model JSON at ``json_path`` when it is a lab model of ``kind`` (a dict entry of that name: ``adaptation``
    from ``adapt``, ``scope`` from ``scope``); None when it is missing, unreadable or another model's."""
    try:
        data = json.loads(Path(json_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get(kind), dict) else None


def earlier_lab_model(out: Path, name: str, *, source_json: Path, kind: str = "adaptation") -> dict | None:
    """The JSON of the earlier lab model that this run will replace, or None when OUT holds no files of ``name``.

    Refuses (:class:`ModelFilesExistError`) the source model's own JSON, a JSON that is not a lab model of ``kind``
    (no such entry: ``adaptation``, or ``scope``) or cannot be read, and model files of ``name`` without their JSON.
    """
    json_path = out / f"{name}.json"
    if json_path.exists() and json_path.resolve() == Path(source_json).resolve():
        raise ModelFilesExistError(f"{json_path} is the source model's own JSON; choose another --name or --out.")
    present = [out / f"{name}{s}" for s in MODEL_SUFFIXES if (out / f"{name}{s}").exists()]
    if not present:
        return None
    data = read_lab_model(json_path, kind=kind)
    if data is None:
        listed = ", ".join(p.name for p in present)
        what = "lab adaptation" if kind == "adaptation" else f"lab model with a {kind}"
        raise ModelFilesExistError(f"{out} already holds {listed}, which is not an earlier {what} named {name!r}; "
                                   "choose another --name or --out (nothing was written).")
    return data


@contextmanager
def staged(out: Path, name: str):
    """Yield a hidden folder inside ``out`` to write the model into; on success move its files into ``out``.

    Model files (:data:`MODEL_SUFFIXES`) replace their namesakes, the JSON last; any other file (the morphology
    reference) is moved only where ``out`` has none. On an error the folder is removed and ``out`` is untouched.
    """
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out))
    try:
        yield staging
        model_files = [staging / f"{name}{s}" for s in MODEL_SUFFIXES]
        for path in staging.iterdir():
            if path not in model_files and not (out / path.name).exists():
                os.replace(path, out / path.name)
        for path in model_files:  # .json last: a reader never finds a JSON whose files are not in place
            if path.exists():
                os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
