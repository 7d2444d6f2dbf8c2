"""Classifier: image in, calibrated :class:`Prediction` with an on-device CAM out."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from . import cam as cam_maps
from . import tta
from .ood import OODModel, pooled
from .errors import ModelFormatError
from .images import ImageInput, load_image
from .preprocessing import input_table, prepare, prepare_quantized
from .registry import resolve
from .runtime import TFLiteModel, available_cores, quantize
from .spec import ModelSpec


@dataclass(frozen=True, eq=False)
class Prediction:
    """One classified image.

    ``probabilities`` are temperature-calibrated and sum to 1; ``uncertain`` is
    True when the top confidence is below the threshold chosen on validation
    data (stored in the model JSON): such a cell needs review by a specialist.
    ``cam`` is the class activation map of the top class, float in [0, 1] at the
    image's size (None when not asked for). ``out_of_distribution`` is True when
    the image's features are far from every training class (see ``ood.py``):
    probably not a blood cell like the training images; it also sets ``uncertain``.
    It is None for models without an OOD reference. ``outside_scope`` names the
    model's first choice when a lab's differential scope (``hematovision/scope.py``)
    does not count that class: ``label`` is then the best class the lab counts and
    the cell is ``uncertain``. ``atypical`` is True when the
    OOD score is above the model's ``ood.atypical_threshold`` (the 95th percentile
    of val scores: one training-lab cell in twenty is atypical). On its own it
    means nothing; many atypical cells in one batch mean an unfamiliar set-up
    (``hematovision.batch_shift``). None without that threshold.
    """

    label: str
    confidence: float
    probabilities: dict[str, float]
    uncertain: bool
    cam: np.ndarray | None = field(default=None, repr=False)
    model: str = ""
    ood_score: float | None = None
    out_of_distribution: bool | None = None
    atypical: bool | None = None
    outside_scope: str | None = None

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]

    def to_json(self) -> dict:
        return {"label": self.label, "confidence": self.confidence, "probabilities": self.probabilities,
                "uncertain": self.uncertain, "out_of_distribution": self.out_of_distribution, "atypical": self.atypical,
                "outside_scope": self.outside_scope}


class Classifier:
    """A verified model ready to classify; load it once with :func:`load_model`.

    ``batch_views=False`` runs the test-time augmentation views one invoke each
    (the previous path: identical int8 outputs; which one is faster depends on the
    CPU's caches, see docs/benchmarks.md).
    """

    def __init__(self, spec: ModelSpec, *, num_threads: int | None = None, batch_views: bool = True):
        self.spec = spec
        self.model = TFLiteModel(spec.tflite_path, num_threads=available_cores() if num_threads is None else num_threads)
        expected = (1, spec.input.height, spec.input.width, 3)
        if self.model.input_shape != expected:
            raise ModelFormatError(f"{spec.tflite_path}: input shape {self.model.input_shape} does not match {expected} in its JSON.")
        self.views = tta.views_of(spec.tta)
        detail = self.model.input_detail
        # int8/uint8 input: pixels go through a 256-entry table straight to the quantized tensor (same values).
        self.input_table = (input_table(spec.input, lambda x: quantize(x, detail))
                            if np.issubdtype(detail["dtype"], np.integer) and detail["quantization"][0] else None)
        self.views_batched = batch_views and len(self.views) > 1 and self._prepare_batch()
        shapes = self.model.output_shapes
        n_out = len(shapes)
        if spec.outputs.logits_index >= n_out or shapes[spec.outputs.logits_index] != (1, len(spec.labels)):
            raise ModelFormatError(f"{spec.tflite_path}: output {spec.outputs.logits_index} is not (1, {len(spec.labels)}) logits; outputs are {shapes}.")
        self.head_weights = self.head_bias = None
        if spec.outputs.features_index is not None and spec.head_path is not None:
            with np.load(spec.head_path) as head:
                self.head_weights = head["weights"].astype(np.float32)
                self.head_bias = head["bias"].astype(np.float32) if "bias" in head.files else None
            fshape = shapes[spec.outputs.features_index]
            if len(fshape) != 4 or self.head_weights.shape != (fshape[3], len(spec.labels)):
                raise ModelFormatError(f"{spec.head_path}: head weights {self.head_weights.shape} do not fit feature map {fshape}.")
        # "head": {"source": "head_file"} (e.g. a few-shot adapted model, see adapt.py): the logits are
        # computed here from the head npz, logits = GAP(features) @ W + b, not read from the .tflite.
        head_source = (spec.raw.get("head") or {}).get("source", "tflite")
        if head_source not in ("tflite", "head_file"):
            raise ModelFormatError(f"{spec.json_path}: head.source must be 'tflite' or 'head_file', not {head_source!r}.")
        self.logits_from_head = head_source == "head_file"
        if self.logits_from_head and (self.head_weights is None or self.head_bias is None):
            raise ModelFormatError(f"{spec.json_path}: head.source is 'head_file' but the model has no feature output "
                                   "or its head npz has no weights/bias; re-run `python -m hematovision adapt`.")
        self.ood = OODModel.load(spec.ood_path) if spec.ood_path is not None and spec.outputs.features_index is not None else None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    @property
    def name(self) -> str:
        return self.spec.name

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Network input (1, h, w, 3), float or already quantized -> (logits (C,), feature map (h', w', K) or None).

        With the model's test-time augmentation, logits and feature maps are
        averaged over the 8 dihedral transforms (maps turned back first). The 8
        views run as ONE batch-8 invoke (``views_batched``), else one invoke each;
        the int8 outputs are the same either way.
        """
        fi = self.spec.outputs.features_index
        if self.views_batched:
            outs = self.model.run_batch(tta.stack(x[0], self.views))
            per_view = [[o[j] for o in outs] for j in range(len(self.views))]
        else:
            per_view = [[o[0] for o in self.model.run(np.ascontiguousarray(tta.forward(x[0], k, flip))[None])]
                        for k, flip in self.views]
        logits = [out[self.spec.outputs.logits_index] for out in per_view]
        feats = [tta.inverse(out[fi], k, flip) for out, (k, flip) in zip(per_view, self.views)] if fi is not None else []
        fmap = _mean(feats) if feats else None
        if self.logits_from_head:
            # GAP and the dense head are linear, so this equals the mean of the per-view head logits.
            return pooled(fmap) @ self.head_weights + self.head_bias, fmap
        return _mean(logits), fmap

    def network_input(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 image -> what :meth:`forward` takes: the quantized tensor for an integer model, else float."""
        if self.input_table is not None:
            return prepare_quantized(rgb, self.spec.input, self.input_table)
        return prepare(rgb, self.spec.input)

    def _prepare_batch(self) -> bool:
        """Make the batch interpreter for the TTA views; False (one invoke per view) where the model cannot take it."""
        try:
            self.model.prepare_batch(len(self.views))
        except ModelFormatError:
            return False
        return True

    def predict(self, image: ImageInput, *, cam: bool = True) -> Prediction:
        """Classify one image (path, bytes, PIL image or array; see :func:`load_image`)."""
        rgb = load_image(image)
        logits, features = self.forward(self.network_input(rgb))
        logits = logits.astype(np.float64)
        # Temperature scaling (fitted on val): p = softmax(z / T).
        z = logits / self.spec.temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        top, outside = self.spec.scope.choose(p, self.labels) if self.spec.scope else (int(p.argmax()), None)
        heat = None
        if cam and self.head_weights is not None:
            heat = cam_maps.upsample(cam_maps.class_activation_map(features, self.head_weights, top), *rgb.shape[:2])
        ood_score = ood = atypical = None
        if self.ood is not None:
            ood_score = float(self.ood.score(pooled(features)))
            ood = ood_score > self.ood.threshold
            if self.spec.atypical_threshold is not None:
                atypical = ood_score > self.spec.atypical_threshold
        confidence = float(p[top])
        return Prediction(
            label=self.labels[top],
            confidence=confidence,
            probabilities={label: float(v) for label, v in zip(self.labels, p)},
            uncertain=confidence < self.spec.uncertain_threshold or bool(ood) or outside is not None,
            cam=heat,
            model=self.spec.name,
            ood_score=ood_score,
            out_of_distribution=ood,
            atypical=atypical,
            outside_scope=outside,
        )


def _mean(arrays: list[np.ndarray]) -> np.ndarray:
    """The mean of same-shape arrays (the one array itself when there is one view)."""
    return arrays[0] if len(arrays) == 1 else np.mean(arrays, axis=0)


def load_model(name_or_path: str | os.PathLike, *, revision: str | None = None, offline: bool | None = None,
               models_dir: str | os.PathLike | None = None, num_threads: int | None = None) -> Classifier:
    """Load a model by name (``"wbc"``, ``"all"``) or path, verified against its sha256.

    ``revision`` overrides the pinned Hub revision; ``offline`` (default: the
    ``HF_HUB_OFFLINE`` variable) forbids network access. ``num_threads``: TFLite
    interpreter threads (default: every core this process may use; a process pool
    gives each worker its share, see ``commands/_pool.py``).
    """
    return Classifier(resolve(name_or_path, revision=revision, offline=offline, models_dir=models_dir), num_threads=num_threads)
