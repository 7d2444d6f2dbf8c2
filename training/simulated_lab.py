"""A documented, seeded "other lab" for proxy evaluation of cross-lab robustness.

Six profiles, each what a different microscope / stain / camera does to the
same cell; image i gets profile i % 6 with small seeded jitter. numpy + OpenCV.

  bccd_stain   Reinhard colour transfer to the Lab statistics of the BCCD fields
               (another lab's Giemsa stain), slight defocus, JPEG q70
  warm_lamp    halogen white balance (R up, B down) and gamma 0.85
  cool_led     LED white balance (B up, R down) and sensor noise
  pale_stain   under-stained: saturation x0.55, lower contrast, brighter
  dark_phone   over-stained, gamma 1.3, phone JPEG q35
  lowres_blur  a low-resolution camera (x0.4 and back) and defocus
"""

from __future__ import annotations

import cv2
import numpy as np

PROFILES = ("bccd_stain", "warm_lamp", "cool_led", "pale_stain", "dark_phone", "lowres_blur")

#: Mean and std of L*, a*, b* (OpenCV 8-bit Lab) over 50 BCCD fields (measured
#: from shared/data/bccd/images, first 50 files sorted by name).
BCCD_LAB = (np.array([188.1, 132.7, 127.7]), np.array([20.7, 7.3, 9.6]))


def reinhard(rgb: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Reinhard et al. 2001: match each Lab channel's mean and std to a target."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    m, s = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0) + 1e-6
    lab = (lab - m) / s * std + mean
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), sigma)


def _gains(rgb: np.ndarray, gains, gamma: float = 1.0) -> np.ndarray:
    x = np.clip(rgb.astype(np.float32) / 255.0 * np.asarray(gains, np.float32), 0, 1)
    return np.rint(255 * x ** gamma).astype(np.uint8)


def _saturation(rgb: np.ndarray, factor: float, contrast: float = 1.0, shift: float = 0.0) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 1] = np.clip(hsv[..., 1] * factor, 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    out = (out - out.mean()) * contrast + out.mean() + shift
    return np.clip(out, 0, 255).astype(np.uint8)


def apply(rgb: np.ndarray, profile: str, rng: np.random.Generator) -> np.ndarray:
    j = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731 - small seeded jitter
    if profile == "bccd_stain":
        return _jpeg(_blur(reinhard(rgb, *BCCD_LAB), j(0.6, 1.0)), 70)
    if profile == "warm_lamp":
        return _gains(rgb, (j(1.1, 1.2), 1.0, j(0.75, 0.85)), gamma=0.85)
    if profile == "cool_led":
        noisy = _gains(rgb, (j(0.82, 0.9), 1.0, j(1.1, 1.2))).astype(np.float32) + rng.normal(0, j(4, 8), rgb.shape)
        return np.clip(noisy, 0, 255).astype(np.uint8)
    if profile == "pale_stain":
        return _saturation(rgb, j(0.5, 0.6), contrast=0.8, shift=15)
    if profile == "dark_phone":
        return _jpeg(_saturation(_gains(rgb, (1, 1, 1), gamma=1.3), j(1.2, 1.4)), 35)
    if profile == "lowres_blur":
        h, w = rgb.shape[:2]
        small = cv2.resize(rgb, (int(w * 0.4), int(h * 0.4)), interpolation=cv2.INTER_AREA)
        return _blur(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), j(0.8, 1.2))
    raise ValueError(f"unknown profile {profile!r}; one of {PROFILES}")


def transform_all(images, *, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Image i -> (profile name, transformed image), profile i % 6, seeded."""
    rng = np.random.default_rng(seed)
    return [(PROFILES[i % len(PROFILES)], apply(img, PROFILES[i % len(PROFILES)], rng)) for i, img in enumerate(images)]
