"""ModelSpec: everything known about a model, read from its JSON metadata.

The JSON beside each ``.tflite`` is the one place where labels, input size,
colour order, normalisation, output roles, calibration and provenance live.
Training writes it, export completes it, and the app, CLI and station read it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ModelFormatError
from .scope import DifferentialScope, ScopeError
from .stain_norm import StainReference
from .tta import VIEW_SETS

FORMAT_VERSION = 1

#: MobileNetV2's input scaling, x / 127.5 - 1, written as x * scale + offset.
MOBILENET_NORMALIZATION = {"scale": 1.0 / 127.5, "offset": -1.0}


@dataclass(frozen=True)
class InputSpec:
    """How an RGB uint8 image becomes the network's input tensor."""

    height: int
    width: int
    color_order: str = "RGB"
    scale: float = MOBILENET_NORMALIZATION["scale"]
    offset: float = MOBILENET_NORMALIZATION["offset"]
    stain: StainReference | None = None  # Reinhard reference, applied after the resize

    def to_json(self) -> dict[str, Any]:
        return {
            "size": [self.height, self.width],
            "color_order": self.color_order,
            "resize": "cv2.INTER_AREA when shrinking, cv2.INTER_CUBIC when enlarging; whole frame, no crop",
            "normalization": {"scale": self.scale, "offset": self.offset, "formula": "x * scale + offset"},
            "stain_normalization": self.stain.to_json() if self.stain else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "InputSpec":
        h, w = (int(_number(v, "input.size", low=1)) for v in data["size"])
        norm = data.get("normalization", MOBILENET_NORMALIZATION)
        order = str(data.get("color_order", "RGB")).upper()
        if order not in ("RGB", "BGR"):
            raise ModelFormatError(f"color_order must be RGB or BGR, not {order!r}.")
        return cls(height=h, width=w, color_order=order, scale=_number(norm["scale"], "input.normalization.scale", low=0, low_open=True),
                   offset=_number(norm["offset"], "input.normalization.offset"),
                   stain=StainReference.from_json(data.get("stain_normalization")))


def _tta(value, json_path: Path) -> str | None:
    if value in (None, "none"):
        return None
    if value not in VIEW_SETS:
        raise ModelFormatError(f"{json_path}: test_time_augmentation must be one of {sorted(VIEW_SETS)} or null, "
                               f"not {value!r}.")
    return value


def _beside(folder: Path, name: str | None) -> Path | None:
    return folder / str(name) if name else None


def _number(value, field: str, *, low: float | None = None, high: float | None = None, low_open: bool = False) -> float:
    """A finite float in [low, high] (``low_open``: above ``low``); else ValueError naming the field and its range."""
    number = float(value)
    too_low = low is not None and (number <= low if low_open else number < low)
    if not math.isfinite(number) or too_low or (high is not None and number > high):
        bounds = f"{'>' if low_open else '>='} {low:g}" if low is not None else ""
        bounds += (" and " if bounds else "") + (f"<= {high:g}" if high is not None else "")
        raise ValueError(f"{field} must be a finite number{' ' + bounds if bounds else ''}, not {value!r}")
    return number


def _red_cell_fraction(morphology) -> float | None:
    value = (morphology or {}).get("red_cell_fraction")
    return None if value is None else _number(value, "morphology.red_cell_fraction", low=0, high=1, low_open=True)


def _optional_float(value) -> float | None:
    """A finite float, or None when absent (a bad value raises ValueError: a bad field)."""
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


@dataclass(frozen=True)
class OutputSpec:
    """Which TFLite output holds the logits and which the last feature map."""

    logits_index: int
    features_index: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A model's metadata, parsed and checked; ``raw`` keeps the full JSON."""

    name: str
    labels: tuple[str, ...]
    input: InputSpec
    outputs: OutputSpec
    sha256: str
    tflite_path: Path
    json_path: Path
    temperature: float = 1.0
    uncertain_threshold: float = 0.0
    head_path: Path | None = None
    ood_path: Path | None = None
    atypical_threshold: float | None = None  # OOD score above which a cell counts as atypical (hematovision/batch_shift.py)
    descriptions: Mapping[str, str] = field(default_factory=dict)
    red_cell_fraction: float | None = None
    tta: str | None = None
    task: str = ""
    display_name: str = ""
    examples: str | None = None
    morphology_reference: Path | None = None
    scope: DifferentialScope | None = None  # the classes a lab counts (hematovision/scope.py); None: all
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def counted_labels(self) -> tuple[str, ...]:
        """The classes a differential of this model counts: its scope's classes, or all its labels (model order)."""
        return self.scope.classes if self.scope is not None else self.labels

    def red_cell_px(self, shape: tuple[int, ...]) -> float | None:
        """Expected red-cell diameter in pixels for an image of ``shape`` (None: use the default scale)."""
        if self.red_cell_fraction is None:
            return None
        return float(self.red_cell_fraction * (shape[0] * shape[1]) ** 0.5)

    @classmethod
    def from_file(cls, json_path: str | Path, tflite_path: str | Path | None = None) -> "ModelSpec":
        json_path = Path(json_path)
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{json_path}: cannot read the model metadata ({exc}).") from exc
        if not isinstance(data, dict):
            raise ModelFormatError(f"{json_path}: the model metadata must be a JSON object.")
        return cls.from_json(data, json_path=json_path, tflite_path=tflite_path)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, json_path: Path, tflite_path: str | Path | None = None) -> "ModelSpec":
        try:
            version = int(data.get("format_version", 0))
            if version != FORMAT_VERSION:
                raise ModelFormatError(
                    f"{json_path}: format_version {version} is not supported (this hematovision reads "
                    f"{FORMAT_VERSION}); upgrade hematovision or re-export the model."
                )
            labels = tuple(str(x) for x in data["labels"])
            if len(labels) < 2 or len(set(labels)) != len(labels):
                raise ModelFormatError(f"{json_path}: labels must be at least two distinct names.")
            out = data["outputs"]
            outputs = OutputSpec(
                logits_index=int(out["logits"]["index"]),
                features_index=int(out["features"]["index"]) if out.get("features") else None,
            )
            cal = data.get("calibration", {})
            head = data.get("cam", {}).get("head_file")
            ood = (data.get("ood") or {}).get("file")
            folder = json_path.parent
            return cls(
                name=str(data["name"]),
                labels=labels,
                input=InputSpec.from_json(data["input"]),
                outputs=outputs,
                sha256=str(data["sha256"]).lower(),
                tflite_path=Path(tflite_path) if tflite_path else folder / str(data.get("file", f"{data['name']}.tflite")),
                json_path=json_path,
                temperature=_number(cal.get("temperature", 1.0), "calibration.temperature", low=0, low_open=True),
                uncertain_threshold=_number(cal.get("uncertain_threshold", 0.0), "calibration.uncertain_threshold", low=0, high=1),
                head_path=folder / head if head else None,
                ood_path=folder / ood if ood else None,
                atypical_threshold=_optional_float((data.get("ood") or {}).get("atypical_threshold")),
                descriptions=dict(data.get("descriptions", {})),
                red_cell_fraction=_red_cell_fraction(data.get("morphology")),
                tta=_tta(data.get("test_time_augmentation"), json_path),
                task=str(data.get("task", "")),
                display_name=str(data.get("display_name") or data.get("task") or data["name"]),
                examples=data.get("examples"),
                morphology_reference=_beside(folder, (data.get("morphology") or {}).get("reference_file")),
                scope=DifferentialScope.from_json(data.get("scope"), labels),
                raw=dict(data),
            )
        except ModelFormatError:
            raise
        except ScopeError as exc:
            raise ModelFormatError(f"{json_path}: {exc} Write the scope again with `python -m hematovision scope`.") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(
                f"{json_path}: model metadata is missing or has a bad field ({type(exc).__name__}: {exc}); "
                "re-export the model with `python -m export.tflite`."
            ) from exc
