"""The models the app serves, and what it keeps of each upload's analysis.

Models are data: the choices are the models of the models folder
(:func:`hematovision.registry.list_models`: ``$HEMATOVISION_MODELS``, else the
checkout's ``models/``), each shown by its JSON's ``display_name``, plus the
Hub-registered product models that are not in the folder (fetched at their
pinned revision). Each is loaded once; :meth:`ModelStore.refresh` adds a model
dropped in the folder later (a lab model, the Review tab's adapt button) and
reloads one whose JSON changed. A product model that cannot be loaded stops the
start with the core's message; any other broken model is skipped with one log
line saying why.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np

from ..cells import morphology
from .. import registry
from ..classifier import Classifier, Prediction, load_model
from ..errors import HematoVisionError, MorphologyReferenceError
from ..images import load_image
from .errors import refusal
from .imaging import downscale

log = logging.getLogger("hematovision.app")
#: What the prediction cache may hold (compact heatmaps and analysis images), in bytes.
CACHE_BYTES = 64 * 2**20


def _signature(spec) -> tuple[str, int]:
    return str(spec.json_path), spec.json_path.stat().st_mtime_ns


class ModelStore:
    """Name -> loaded model (``models``), its morphology reference (``references``) and why it has none (``notes``)."""

    def __init__(self, folder=None):
        self.folder = registry.models_folder(folder)
        self.models: dict[str, Classifier] = {}
        self.references: dict[str, morphology.Reference | None] = {}
        self.notes: dict[str, str] = {}
        self._seen: dict[str, tuple[str, int]] = {}  # name -> signature of the JSON loaded (or skipped)
        self._lock = threading.Lock()

    def load(self):
        """At start: every model of the folder, then the Hub-registered ones not in it; a product model must load."""
        self.refresh(strict=True)
        if not self.models:
            raise refusal(f"No model in {self.folder}: copy a model's files there (models/<name>.json and the files "
                          "it names) or set HEMATOVISION_MODELS.")

    def refresh(self, strict=False) -> list[str]:
        """Load the models added (or changed) in the folder since the last look; returns their names."""
        with self._lock:
            specs = registry.list_models(self.folder)
            changed = [spec for spec in specs if self._seen.get(spec.name) != _signature(spec)]
            added = [name for name in (self._load_local(spec, strict) for spec in changed) if name]
            local = {spec.name for spec in specs}
            for name in registry.HUB_MODELS:
                if name not in local and name not in self.models:
                    self._install(name, load_model(name, models_dir=self.folder))  # fetched; raises when it cannot
                    added.append(name)
            return added

    def _load_local(self, spec, strict):
        self._seen[spec.name] = _signature(spec)
        try:
            clf = load_model(spec.json_path)
        except HematoVisionError as exc:
            if strict and spec.name in registry.HUB_MODELS:
                raise
            log.warning("model %s skipped: %s", spec.json_path, exc)
            return None
        self._install(spec.name, clf)
        return spec.name

    def _install(self, name, clf):
        reference, note = _reference(clf.spec)
        self.models[name] = clf
        self.references[name], self.notes[name] = reference, note
        PREDICTIONS.discard(lambda key: key[0] == name)  # a reloaded model's old results are stale

    def names(self) -> list[str]:
        """The product models (in the registry's order) first, then the others by name."""
        with self._lock:
            names = list(self.models)
        return [n for n in registry.HUB_MODELS if n in names] + sorted(n for n in names if n not in registry.HUB_MODELS)

    def choices(self) -> list[tuple[str, str]]:
        """(label, name) per model for a Radio: its display name, with the name when two display names repeat."""
        names = self.names()
        shown = [self.models[n].spec.display_name or n for n in names]
        return [(label if shown.count(label) == 1 else f"{label} · {name}", name) for label, name in zip(shown, names)]

    def default(self) -> str:
        return self.names()[0]

    def get(self, name) -> Classifier:
        if not isinstance(name, str) or name not in self.models:
            raise refusal(f"Unknown model {name!r}; choose one of {', '.join(self.names())}.")
        return self.models[name]


def _reference(spec):
    """The normal morphology reference the model's JSON names (``morphology.reference_file``), or None and why."""
    path = spec.morphology_reference
    if path is None:
        return None, (f"The {spec.name} model names no normal morphology reference (morphology.reference_file in "
                      f"{spec.json_path.name}); measurements only.")
    try:
        return morphology.load_reference(path), ""
    except FileNotFoundError:
        note = f"{path.name}, the normal reference named in {spec.json_path.name}, is missing: copy it beside the model."
    except MorphologyReferenceError as exc:
        note = f"{path.name} cannot be used as a normal reference ({exc})."
    log.warning("model %s: %s", spec.name, note)
    return None, note + " Measurements only."


@dataclass(frozen=True, eq=False)
class Analysis:
    """What the app keeps of one upload for one model: the prediction of the full image, with its heatmap at the
    analysis resolution, and the image at that resolution (for morphology and 3D)."""

    prediction: Prediction
    image: np.ndarray

    @property
    def nbytes(self):
        cam = self.prediction.cam
        return self.image.nbytes + (0 if cam is None else cam.nbytes)


class ResultCache:
    """A least-recently-used cache bounded by bytes, shared by the queue's workers."""

    def __init__(self, limit_bytes):
        self.limit_bytes = int(limit_bytes)
        self._items = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self):
        with self._lock:
            return sum(item.nbytes for item in self._items.values())

    def __len__(self):
        return len(self._items)

    def get_or_compute(self, key, compute):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        item = compute()  # outside the lock: the other worker is not held up
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            total = sum(i.nbytes for i in self._items.values())
            while total > self.limit_bytes and len(self._items) > 1:
                total -= self._items.popitem(last=False)[1].nbytes
        return item

    def discard(self, predicate):
        """Drop the entries whose key matches ``predicate``."""
        with self._lock:
            for key in [k for k in self._items if predicate(k)]:
                del self._items[key]

    def clear(self):
        with self._lock:
            self._items.clear()


#: One analysis per model and upload (Gradio's upload paths are content-addressed).
PREDICTIONS = ResultCache(CACHE_BYTES)
#: The app's models (app.py calls STORE.load() once, at import).
STORE = ModelStore()


def analyse(name, path):
    """Classify the full image once, then keep only what the app shows: a compact heatmap and analysis image."""
    clf = STORE.get(name)

    def compute():
        rgb = load_image(path)
        pred = clf.predict(rgb, cam=True)
        return Analysis(replace(pred, cam=None if pred.cam is None else downscale(pred.cam)), downscale(rgb))

    return PREDICTIONS.get_or_compute((name, path), compute)


def predict(name, path):
    return analyse(name, path).prediction
