"""A seeded, generated set of images that are NOT blood-smear cells.

Used to measure how often the model refuses what it should not classify.
Categories: photos (scikit-image's bundled sample photographs, random crops),
blank frames, sensor noise, text, gradients/patterns, fluorescence-like
images (bright blobs on black), and other microscopy (IHC tissue, retina,
phase-contrast cell). Nothing is downloaded.
"""

from __future__ import annotations

import cv2
import numpy as np

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "hubble_deep_field", "colorwheel", "grass", "gravel", "brick", "clock")
OTHER_MICROSCOPY = ("immunohistochemistry", "retina", "cell")
CATEGORIES = ("photo", "blank", "noise", "text", "pattern", "fluorescence", "other_microscopy")


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = np.rint(255 * (img - img.min()) / max(float(img.max() - img.min()), 1e-9)).astype(np.uint8)
    return np.dstack([img] * 3) if img.ndim == 2 else img[..., :3]


def _crop(rng, img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    side = int(rng.uniform(0.3, 1.0) * min(h, w))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    return cv2.resize(img[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)


def generate(n_per_category: int = 60, *, size: int = 160, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Return ``[(category, RGB uint8 image), ...]``."""
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [_rgb(getattr(skimage.data, n)()) for n in PHOTOS]
    micro = [_rgb(getattr(skimage.data, n)()) for n in OTHER_MICROSCOPY]
    out: list[tuple[str, np.ndarray]] = []
    for _ in range(n_per_category):
        out.append(("photo", _crop(rng, photos[rng.integers(len(photos))], size)))
        out.append(("other_microscopy", _crop(rng, micro[rng.integers(len(micro))], size)))
        out.append(("blank", np.full((size, size, 3), rng.integers(0, 256, 3), np.uint8)))
        noise = rng.normal(rng.uniform(40, 215), rng.uniform(5, 60), (size, size, 3))
        out.append(("noise", np.clip(noise, 0, 255).astype(np.uint8)))
        text = np.full((size, size, 3), rng.integers(180, 256, 3), np.uint8)
        for line in range(int(rng.integers(2, 6))):
            word = "".join(chr(c) for c in rng.integers(65, 91, int(rng.integers(3, 9))))
            cv2.putText(text, word, (int(rng.integers(0, 40)), 25 + 30 * line), cv2.FONT_HERSHEY_SIMPLEX,
                        float(rng.uniform(0.5, 1.2)), tuple(int(v) for v in rng.integers(0, 120, 3)), 2)
        out.append(("text", text))
        yy, xx = np.mgrid[0:size, 0:size] / size
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = (np.sin(2 * np.pi * rng.uniform(1, 8) * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))) + 1) / 2
        out.append(("pattern", (c0 * t[..., None] + c1 * (1 - t[..., None])).astype(np.uint8)))
        fluo = np.zeros((size, size, 3), np.float32)
        channel = rng.integers(0, 3)
        for _ in range(int(rng.integers(1, 8))):
            cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(5, 30)
            blob = np.exp(-(((yy * size - cy) ** 2 + (xx * size - cx) ** 2) / (2 * r * r)))
            fluo[..., channel] += blob * rng.uniform(120, 255)
            fluo[..., (channel + 1) % 3] += blob * rng.uniform(0, 80)
        out.append(("fluorescence", np.clip(fluo + rng.normal(0, 4, fluo.shape), 0, 255).astype(np.uint8)))
    return out
