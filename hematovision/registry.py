"""Find a model by name or path, fetch it from the Hugging Face Hub if needed, verify it.

Resolution order for ``load_model("wbc")``:
  1. a path to a ``.json`` / ``.tflite`` (the other file sits beside it);
  2. ``<models_dir>/wbc.json``: ``models_dir`` argument, else ``$HEMATOVISION_MODELS``,
     else the ``models/`` folder of this checkout;
  3. the Hub repo registered for the name (``HUB_MODELS``) at its pinned revision,
     through ``huggingface_hub.hf_hub_download`` (imported only then).
Before a model is used, the sha256 of its .tflite (and CAM head) must match the JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelFormatError, ModelIntegrityError, ModelNotFoundError
from .spec import ModelSpec

#: The checkout's models/ folder (the shipped models live there).
REPO_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class HubModel:
    repo_id: str
    revision: str  # a tag or commit: pinned, never a moving branch


#: Where each product model is published. The revision is pinned to the
#: release tag that carries exactly the files committed in models/.
HUB_MODELS = {
    "wbc": HubModel(repo_id="hematovision/hematovision-models", revision="v0.1.0"),
    "all": HubModel(repo_id="hematovision/hematovision-models", revision="v0.1.0"),
}


def models_folder(models_dir: str | os.PathLike | None = None) -> Path:
    """The local models folder: ``models_dir``, else ``$HEMATOVISION_MODELS``, else this checkout's ``models/``."""
    return Path(models_dir) if models_dir else Path(os.environ.get("HEMATOVISION_MODELS", REPO_MODELS_DIR))


def list_models(models_dir: str | os.PathLike | None = None) -> list[ModelSpec]:
    """Every model in the models folder: each ``<name>.json`` that is model metadata (other JSON is ignored).

    A lab model is a file dropped in the folder (``python -m hematovision adapt --out models``): it is listed
    here, so the app, CLI and station offer it without code changes. Sorted by name; not yet sha256-verified
    (``resolve`` verifies before use).
    """
    folder = models_folder(models_dir)
    specs = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "format_version" in data and "labels" in data and path.stem == data.get("name"):
            specs.append(ModelSpec.from_json(data, json_path=path))
    return specs


def model_names(models_dir: str | os.PathLike | None = None) -> list[str]:
    """Names ``load_model`` accepts: the local models folder's models, then Hub-registered ones not present locally."""
    local = [s.name for s in list_models(models_dir)]
    return local + [n for n in HUB_MODELS if n not in local]


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve(name_or_path: str | os.PathLike, *, revision: str | None = None, offline: bool | None = None,
            models_dir: str | os.PathLike | None = None) -> ModelSpec:
    """Return the verified :class:`ModelSpec` for a model name or path."""
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.suffix in (".json", ".tflite") or os.sep in text or path.exists():
        spec = _from_path(path)
    else:
        folder = models_folder(models_dir)
        local = folder / f"{text}.json"
        spec = ModelSpec.from_file(local) if local.exists() else _from_hub(text, folder, revision=revision, offline=is_offline(offline))
    verify(spec)
    return spec


def _from_path(path: Path) -> ModelSpec:
    if path.is_dir():
        raise ModelNotFoundError(f"{path} is a directory; pass a model .json or .tflite file, or a model name.")
    json_path = path.with_suffix(".json")
    if not path.exists():
        raise ModelNotFoundError(f"{path}: no such model file; check the path or pass a model name such as 'wbc'.")
    if not json_path.exists():
        raise ModelNotFoundError(
            f"{json_path}: the model's metadata JSON is missing beside {path.name}; copy it along with the "
            ".tflite (both are written by `python -m export.tflite`)."
        )
    return ModelSpec.from_file(json_path, path if path.suffix == ".tflite" else None)


def _from_hub(name: str, models_dir: Path, *, revision: str | None, offline: bool) -> ModelSpec:
    if name not in HUB_MODELS:
        raise ModelNotFoundError(
            f"no model named {name!r} in {models_dir} and none registered on the Hub; known names: "
            f"{', '.join(model_names(models_dir))}; or pass a path to a .tflite/.json."
        )
    hub = HUB_MODELS[name]
    repo_id = os.environ.get("HEMATOVISION_HUB_REPO", hub.repo_id)
    rev = revision or hub.revision
    json_path = Path(_download(repo_id, f"{name}.json", rev, offline, models_dir))
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{json_path}: downloaded metadata is not valid JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise ModelFormatError(f"{json_path}: downloaded metadata is not a JSON object.")
    tflite = _download(repo_id, str(data.get("file", f"{name}.tflite")), rev, offline, models_dir)
    for extra in (data.get("cam", {}).get("head_file"), (data.get("ood") or {}).get("file")):
        if extra:
            _download(repo_id, str(extra), rev, offline, models_dir)
    return ModelSpec.from_file(json_path, tflite)


def _download(repo_id: str, filename: str, revision: str, offline: bool, models_dir: Path) -> str:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError as exc:
        raise ModelNotFoundError(
            f"{filename} is not in {models_dir} and huggingface_hub is not installed to fetch it from "
            f"{repo_id}@{revision}; `pip install huggingface-hub` or copy the model files into {models_dir}."
        ) from exc
    how = (f"get it with `hf download {repo_id} {filename} --revision {revision}` on a machine with internet "
           f"and copy it into {models_dir}, or pass a path to a local model")
    try:
        return hf_hub_download(repo_id, filename, revision=revision, local_files_only=offline, etag_timeout=5)
    except LocalEntryNotFoundError as exc:
        state = "offline mode (HF_HUB_OFFLINE=1)" if offline else "the Hub could not be reached"
        raise ModelNotFoundError(f"{filename} is not in {models_dir} nor in the Hugging Face cache, and {state}; {how}.") from exc
    except (RepositoryNotFoundError, EntryNotFoundError) as exc:
        raise ModelNotFoundError(f"{filename} not found in Hub repo {repo_id}@{revision}; {how}.") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise ModelNotFoundError(f"{filename} could not be downloaded from {repo_id}@{revision} ({exc}); {how}.") from exc


def verify(spec: ModelSpec) -> None:
    """Raise unless the .tflite (and CAM head file) exist and match their recorded sha256."""
    if not spec.tflite_path.exists():
        raise ModelNotFoundError(
            f"{spec.tflite_path}: model file missing (its metadata is {spec.json_path}); re-export it with "
            "`python -m export.tflite` or fetch it from the Hub."
        )
    actual = sha256_file(spec.tflite_path)
    if actual != spec.sha256:
        raise ModelIntegrityError(
            f"{spec.tflite_path}: sha256 {actual[:12]}... does not match {spec.sha256[:12]}... recorded in "
            f"{spec.json_path.name}; the file is corrupt or from another export: re-download or re-export it."
        )
    for path, recorded in ((spec.head_path, spec.raw.get("cam", {}).get("head_sha256")),
                           (spec.ood_path, (spec.raw.get("ood") or {}).get("sha256"))):
        if path is None:
            continue
        if not path.exists():
            raise ModelNotFoundError(f"{path}: named in {spec.json_path.name} but missing; copy it with the model or re-export.")
        if recorded and sha256_file(path) != recorded:
            raise ModelIntegrityError(f"{path}: sha256 does not match {spec.json_path.name}; re-export the model.")
