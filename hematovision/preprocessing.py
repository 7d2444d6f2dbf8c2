"""The one path from an RGB uint8 image to the network's input tensor.

resize (antialiased, whole frame) -> stain normalization (Reinhard, only if the
model JSON has a reference) -> ``x * scale + offset``. Training
(``training/data.py``) decodes through :func:`resize` and applies
:func:`standardize_resized`; the classifier, app and station go through
:func:`prepare`, so a cell is seen the same way everywhere. Every constant
comes from the model's ``InputSpec``.
"""

from __future__ import annotations

import cv2
import numpy as np

from .spec import InputSpec
from .stain_norm import normalize_stain


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased resize of the whole frame to ``(height, width)`` (no crop).

    INTER_AREA averages the source pixels under each target pixel, which is
    the correct low-pass filter when shrinking; INTER_CUBIC when enlarging.
    """
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    shrinking = h * w > height * width
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def normalize(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 RGB -> float32 network input: ``x * scale + offset`` per the model JSON."""
    x = image.astype(np.float32)
    if spec.color_order == "BGR":
        x = x[..., ::-1]
    return x * np.float32(spec.scale) + np.float32(spec.offset)


def input_table(spec: InputSpec, quantize) -> np.ndarray:
    """The network's quantized input for each of the 256 pixel values: ``quantize(v * scale + offset)``.

    Normalization and int8 quantization are both per-value maps of a uint8
    pixel, so their composition is a 256-entry lookup table; indexing it gives
    exactly the int8 tensor that :func:`prepare` followed by quantization gives
    (the same float32 arithmetic on the same values), at a fraction of the cost.
    ``quantize`` is the runtime's float -> tensor-dtype function for the input.
    """
    values = np.arange(256, dtype=np.uint8)
    return quantize(values.astype(np.float32) * np.float32(spec.scale) + np.float32(spec.offset))


def prepare_quantized(image: np.ndarray, spec: InputSpec, table: np.ndarray) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` -> the network's quantized batch ``(1, h, w, 3)`` through :func:`input_table`'s table."""
    u = standardize(image, spec)
    if spec.color_order == "BGR":
        u = u[..., ::-1]
    # cv2.LUT maps 8-bit pixels through a 256-entry table (about 6x faster than numpy indexing); an int8 table
    # goes through as its uint8 bytes, viewed back.
    return cv2.LUT(np.ascontiguousarray(u), table.view(np.uint8)).view(table.dtype)[None]


def standardize_resized(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """An already resized RGB uint8 image -> stain-normalized uint8 (unchanged if the model has no reference)."""
    return normalize_stain(image, spec.stain) if spec.stain is not None else image


def standardize(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """RGB uint8 of any size -> the uint8 image the network sees, before ``x * scale + offset``."""
    return standardize_resized(resize(image, spec.height, spec.width), spec)


def prepare(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` -> float32 batch ``(1, h, w, 3)`` for the model."""
    return normalize(standardize(image, spec), spec)[None]
