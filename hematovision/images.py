"""Read any image input into an RGB uint8 array, or refuse it clearly.

Accepts a path, raw bytes, a PIL image or a numpy array: 8/16-bit, float,
grayscale, RGB, RGBA/LA/P (composited on white, the colour of an empty smear),
CMYK. Refuses corrupt, truncated, animated/multi-page and oversized images with
an :class:`~hematovision.errors.InvalidImageError` subclass.

Pillow's decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``) is left as
it is, for the whole process: this module never changes it. Our pixel budget
is checked from the header as soon as Pillow has opened the file; what
Pillow itself refuses as a bomb becomes the same :class:`ImageTooLargeError`.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageNotFoundError, ImageTooLargeError, InvalidImageError

ImageInput = Union[str, os.PathLike, bytes, "Image.Image", np.ndarray]

#: Default pixel budget: 40 MP is a full-resolution microscope camera frame
#: with room to spare; a decompression bomb is refused before decoding.
MAX_PIXELS = 40_000_000
#: Smallest side we accept; anything smaller holds no cell.
MIN_SIDE = 16
#: File name suffixes treated as images by folder walks (CLI, station, adapt, training).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp")


def load_image(image: ImageInput, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Return ``image`` as a C-contiguous ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ImageNotFoundError: a path that does not exist.
        ImageTooLargeError: more than ``max_pixels`` pixels (default :data:`MAX_PIXELS`).
        InvalidImageError: anything else that is not a usable single 2D image.
    """
    budget = max_pixels
    if isinstance(image, np.ndarray):
        return _from_array(image, budget)
    if isinstance(image, Image.Image):
        return _from_pil(image, budget, "the PIL image")
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _open_and_convert(io.BytesIO(bytes(image)), budget, "the image bytes")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise ImageNotFoundError(f"{path}: no such file; check the path.")
        if path.is_dir():
            raise InvalidImageError(f"{path}: is a directory, not an image file.")
        if path.stat().st_size == 0:
            raise InvalidImageError(f"{path}: the file is empty (0 bytes).")
        with open(path, "rb") as fh:
            return _open_and_convert(fh, budget, str(path))
    raise InvalidImageError(
        f"unsupported input type {type(image).__name__}; pass a file path, bytes, "
        "a PIL image or a numpy array."
    )


def _open_and_convert(fh, budget: int, where: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # Pillow warns above Image.MAX_IMAGE_PIXELS and raises above twice that. The warning is
            # moot: our budget is checked right after the open, before any pixel is decoded.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fh)
            return _from_pil(im, budget, where)
    except Image.DecompressionBombError as exc:
        raise _bomb_error(exc, budget, where) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(f"{where}: not a readable image ({_first_line(exc)}).") from exc
    except InvalidImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, MemoryError) as exc:
        # Pillow reports truncated / corrupt data with these builtins.
        raise InvalidImageError(
            f"{where}: the image data is corrupt or truncated ({_first_line(exc)}); re-export or re-upload it."
        ) from exc


def _bomb_error(exc: Exception, budget: int, where: str) -> ImageTooLargeError:
    """Pillow's decompression-bomb refusal, in the words of our pixel budget."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = int(found.group(1)) if found else None
    if pixels is None or pixels > budget:
        size = f"{pixels:,} pixels" if pixels else "the image"
        return ImageTooLargeError(f"{where}: {size} exceeds the budget of {budget:,}; crop or downscale "
                                  "the image to the cell of interest.")
    return ImageTooLargeError(
        f"{where}: {pixels:,} pixels is within max_pixels={budget:,} but over Pillow's decompression-bomb limit "
        f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,}, refused above twice that); raise that limit "
        "in your program, or crop or downscale the image.")


def _from_pil(im: "Image.Image", budget: int, where: str) -> np.ndarray:
    w, h = im.size
    _check_size(w, h, budget, where)
    if getattr(im, "n_frames", 1) > 1:
        raise InvalidImageError(
            f"{where}: has {im.n_frames} frames (animated or multi-page); HematoVision classifies one "
            "2D image. For a z-stack use `python -m hematovision mesh STACK.tif`."
        )
    im.load()  # decode now, so truncation surfaces here
    ImageOps.exif_transpose(im, in_place=True)  # the orientation the camera recorded (no copy when there is none)
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im)
        return _from_array(arr.astype(np.uint16) if mode.startswith("I;16") else arr, budget)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return np.ascontiguousarray(np.asarray(im if mode == "RGB" else im.convert("RGB"), dtype=np.uint8))


def _from_array(arr: np.ndarray, budget: int) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InvalidImageError(
            f"array of shape {arr.shape} is not an image; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)."
        )
    _check_size(arr.shape[1], arr.shape[0], budget, "the array")
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:
        # Alpha-composite on white: out = a*rgb + (1-a)*255.
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = np.rint(arr[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale by the dtype's range (uint16 / 257, float in [0, 1] or [0, 255])."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return np.rint(arr / 257.0).astype(np.uint8)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 65535:
            raise InvalidImageError(f"integer image values span [{arr.min()}, {arr.max()}]; expected 0..255 or 0..65535.")
        return _to_uint8(arr.astype(np.uint16)) if arr.max() > 255 else arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise InvalidImageError("the float image contains NaN or infinite values.")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 255.0:
            raise InvalidImageError(f"float image values span [{lo:g}, {hi:g}]; expected [0, 1] or [0, 255].")
        scale = 255.0 if hi <= 1.0 else 1.0
        return np.rint(arr * scale).astype(np.uint8)
    raise InvalidImageError(f"unsupported array dtype {arr.dtype}; use uint8, uint16 or float.")


def _check_size(w: int, h: int, budget: int, where: str) -> None:
    if w * h > budget:
        raise ImageTooLargeError(
            f"{where}: {w}x{h} = {w * h:,} pixels exceeds the budget of {budget:,}; crop or downscale "
            "the image to the cell of interest."
        )
    if min(w, h) < MIN_SIDE:
        raise InvalidImageError(f"{where}: {w}x{h} is too small; at least {MIN_SIDE}x{MIN_SIDE} pixels are needed.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
