"""Reinhard stain normalization: map an image's colour statistics onto a reference.

Reinhard et al. (2001), "Color transfer between images": in CIE L*a*b* the
channels are nearly decorrelated, so matching each channel's mean and standard
deviation moves the whole colour distribution,

    y_c = (x_c - mu_c(image)) / sigma_c(image) * sigma_c(ref) + mu_c(ref),   c in (L*, a*, b*).

The reference is the average per-image mean and standard deviation over the
training images (:func:`fit_reference`), stored in the model JSON under
``input.stain_normalization`` so training, export, app and station apply the
same transform (:func:`hematovision.preprocessing.standardize`). Numpy +
OpenCV only, so the Raspberry Pi runs it. ``sigma`` has a floor so a blank or
flat frame is not blown up into amplified noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import cv2
import numpy as np

from .errors import ModelFormatError

#: Smallest per-channel standard deviation (L*a*b* units) an image is divided by.
MIN_SIGMA = 1.0


@dataclass(frozen=True)
class StainReference:
    """Target L*a*b* statistics of the Reinhard transform."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    method: str = "reinhard"

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "lab_mean": list(self.mean), "lab_std": list(self.std),
                "colour_space": "CIE L*a*b* of RGB in [0, 1] (OpenCV float conversion)"}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "StainReference | None":
        if not data:
            return None
        if data.get("method") != "reinhard":
            raise ModelFormatError(f"stain_normalization method must be 'reinhard', not {data.get('method')!r}.")
        try:
            mean = tuple(float(v) for v in data["lab_mean"])
            std = tuple(float(v) for v in data["lab_std"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"stain_normalization needs lab_mean and lab_std, three numbers each ({exc}).") from exc
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ModelFormatError("stain_normalization lab_mean/lab_std must be three numbers each, std > 0.")
        return cls(mean=mean, std=std)  # type: ignore[arg-type]


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _stats(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = lab.reshape(-1, 3)
    return flat.mean(axis=0), flat.std(axis=0)


def lab_stats(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of an RGB uint8 image in L*a*b*."""
    return _stats(_lab(rgb))


def fit_reference(images) -> StainReference:
    """Average per-image L*a*b* statistics of ``images`` (an iterable of RGB uint8 arrays)."""
    stats = [lab_stats(im) for im in images]
    if not stats:
        raise ValueError("fit_reference needs at least one image.")
    mean = np.mean([m for m, _ in stats], axis=0)
    std = np.mean([s for _, s in stats], axis=0)
    return StainReference(mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))  # type: ignore[arg-type]


def normalize_stain(rgb: np.ndarray, reference: StainReference) -> np.ndarray:
    """Reinhard-normalize an RGB uint8 image to ``reference``; returns RGB uint8 of the same shape."""
    lab = _lab(rgb)
    mu, sigma = _stats(lab)
    sigma = np.maximum(sigma, MIN_SIGMA)
    out = (lab - mu) / sigma * np.asarray(reference.std, np.float32) + np.asarray(reference.mean, np.float32)
    rgb_out = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(rgb_out * 255.0 + 0.5, 0, 255).astype(np.uint8)
