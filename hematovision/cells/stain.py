"""Stain primitives for Romanowsky-stained smears (Wright-Giemsa, May-Grunwald-Giemsa).

Numpy + OpenCV only (the Raspberry Pi core); no scikit-image, no contrib modules.

Colour model. Transmitted light obeys Beer-Lambert, so we work in optical
density ``OD_c = log10(I0_c / I_c)`` per channel ``c``, where ``I0`` is the
illumination (the empty-glass background, estimated per image so that a peach
CellaVision frame and a blue-grey phone-microscope frame look alike). In OD the
dyes add up linearly:

* nuclear chromatin binds azure/methylene blue + eosin and looks purple: it
  absorbs red and green strongly but passes blue (``OD_R`` high, ``OD_B`` ~ 0);
* red cells take eosin only and look pink: they absorb green, a little red and
  about as much blue (``OD_R - OD_B`` ~ 0);
* platelets and blue (basophilic) cytoplasm are weakly purple.

So :func:`nuclear_stain` = ``OD_R - OD_B`` is a one-channel nucleus density
that is ~0 on red cells and background, and :func:`stain_density` (the mean OD
over channels) is the total amount of dye, used for the foreground and for the
3D height field.

Public API (stable; other modules such as the microscope station build on it)::

    estimate_background(rgb) -> np.ndarray (3,) float32            # I0, per channel
    optical_density(rgb, *, background=None) -> (H, W, 3) float32   # >= 0
    nuclear_stain(rgb, *, background=None) -> (H, W) float32        # nucleus density map
    stain_density(rgb, *, background=None) -> (H, W) float32        # total dye density
    cell_chroma(rgb, *, background=None) -> (H, W) float32          # white-cell material vs red cell
    nuclear_stain_from_od(od), cell_chroma_from_od(od)              # the same maps from an OD image
    nucleus_mask(rgb, *, threshold=None) -> (H, W) bool
    nucleus_mask_from_density(density, *, threshold=None) -> (H, W) bool
    foreground_mask(rgb, *, threshold=None) -> (H, W) bool          # any stained object
    otsu_threshold(values, *, floor=0.0);  smooth(values, *, sigma);  fill_holes(mask);  disc(radius)
    default_red_cell_px(shape) -> float                             # size unit of every default
    resolve_red_cell_px(shape, red_cell_px) -> float                # the given one, else the default
    check_rgb(rgb) -> rgb                                           # InvalidImageError unless (H, W, 3) uint8

Segmentation (nuclei, whole cells, cells in a field) is
:mod:`hematovision.cells.segmentation`; its names that used to live here
(``find_nucleated_cells``, ``CellRegion``, ``nucleus_groups``, ``trace_cell``
and the size rules such as ``MIN_NUCLEUS_AREA_S2``) are still importable from
this module: they are imported from there on first use.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import InvalidImageError

# Floors under the per-image Otsu thresholds: in a field with no white cell
# Otsu would split noise. Measured on PBC (CellaVision) and BCCD fields, where
# nuclei reach an R-B optical density of 0.13-0.5 and red cells stay < 0.03.
MIN_NUCLEAR_THRESHOLD = 0.06
MIN_FOREGROUND_THRESHOLD = 0.03
#: Gaussian sigma (px) that takes the pixel noise off the density maps before thresholding.
DENSITY_SMOOTHING_PX = 1.0


def check_rgb(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` itself when it is an ``(H, W, 3)`` uint8 array, else :class:`~hematovision.errors.InvalidImageError`."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InvalidImageError(
            "expected an (H, W, 3) uint8 RGB array; convert other inputs with hematovision.load_image first."
        )
    return rgb


def estimate_background(rgb: np.ndarray) -> np.ndarray:
    """The illumination ``I0`` per channel: median colour of the brightest 10 % of pixels."""
    rgb = check_rgb(rgb)
    flat = rgb.reshape(-1, 3)
    brightness = flat.astype(np.int32).sum(axis=1)
    bright = flat[brightness >= np.percentile(brightness, 90)]
    return np.maximum(np.median(bright, axis=0), 1.0).astype(np.float32)


def optical_density(rgb: np.ndarray, *, background: np.ndarray | None = None) -> np.ndarray:
    """Per-channel optical density ``log10((I0 + 1) / (I + 1))``, clipped at 0."""
    rgb = check_rgb(rgb)
    i0 = estimate_background(rgb) if background is None else np.asarray(background, np.float32)
    # A lookup table per channel: 256 logs instead of H*W*3.
    levels = np.arange(256, dtype=np.float32)
    out = np.empty(rgb.shape, np.float32)
    for c in range(3):
        lut = np.maximum(np.log10((i0[c] + 1.0) / (levels + 1.0)), 0.0)
        out[..., c] = lut[rgb[..., c]]
    return out


def nuclear_stain(rgb: np.ndarray, *, background: np.ndarray | None = None) -> np.ndarray:
    """Nucleus (azure) density ``OD_R - OD_B``, clipped at 0: ~0 on red cells and glass."""
    return nuclear_stain_from_od(optical_density(rgb, background=background))


def nuclear_stain_from_od(od: np.ndarray) -> np.ndarray:
    """:func:`nuclear_stain` of an ``(H, W, 3)`` optical-density image: ``max(OD_R - OD_B, 0)``."""
    return np.maximum(od[..., 0] - od[..., 2], 0.0)


def stain_density(rgb: np.ndarray, *, background: np.ndarray | None = None) -> np.ndarray:
    """Total dye density: the mean optical density over R, G, B."""
    return optical_density(rgb, background=background).mean(axis=2)


def otsu_threshold(values: np.ndarray, *, floor: float = 0.0) -> float:
    """Otsu's threshold of a float map (on 256 bins over its range), not below ``floor``."""
    hi = float(values.max())
    if hi <= floor:
        return floor
    # Bin k holds values within half a bin of k * hi / 255; Otsu puts bins <= t
    # in the low class, so the value threshold is the upper edge of bin t.
    scaled = np.rint(np.clip(values / hi * 255.0, 0, 255)).astype(np.uint8).reshape(-1, 1)
    t, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return max((float(t) + 0.5) / 255.0 * hi, floor)


def smooth(values: np.ndarray, *, sigma: float) -> np.ndarray:
    """A Gaussian blur of standard deviation ``sigma`` px (the map itself when ``sigma`` <= 0)."""
    return cv2.GaussianBlur(values, (0, 0), sigma) if sigma > 0 else values


def nucleus_mask(rgb: np.ndarray, *, threshold: float | None = None) -> np.ndarray:
    """Pixels of nuclear chromatin: :func:`nuclear_stain`, smoothed, through :func:`nucleus_mask_from_density`."""
    return nucleus_mask_from_density(smooth(nuclear_stain(rgb), sigma=DENSITY_SMOOTHING_PX), threshold=threshold)


def nucleus_mask_from_density(density: np.ndarray, *, threshold: float | None = None) -> np.ndarray:
    """Nuclear chromatin in a (smoothed) ``OD_R - OD_B`` map: above ``threshold``, opened, holes filled.

    ``threshold=None`` is Otsu's threshold of the stained pixels only (density
    above half the floor, so that a big white field does not dominate), never
    below :data:`MIN_NUCLEAR_THRESHOLD`. A 1 px opening drops isolated specks.
    """
    if threshold is None:
        stained = density[density > MIN_NUCLEAR_THRESHOLD / 2]
        threshold = otsu_threshold(stained, floor=MIN_NUCLEAR_THRESHOLD) if stained.size else MIN_NUCLEAR_THRESHOLD
    mask = (density > threshold).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, disc(1))
    return fill_holes(mask.astype(bool))


def disc(radius: int) -> np.ndarray:
    """The elliptic structuring element of ``radius`` px (a ``2r + 1`` square)."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def foreground_mask(rgb: np.ndarray, *, threshold: float | None = None) -> np.ndarray:
    """Any stained object (red cells, white cells, platelets): density above Otsu's threshold.

    Otsu runs on the density capped at its 90th percentile, so that a dark
    white cell does not pull the threshold above the red cells.
    """
    density = smooth(stain_density(rgb), sigma=DENSITY_SMOOTHING_PX)
    if threshold is None:
        capped = np.minimum(density, np.percentile(density, 90))
        threshold = otsu_threshold(capped, floor=MIN_FOREGROUND_THRESHOLD)
    return density > threshold


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the enclosed holes of a boolean mask (flood the background from the border)."""
    m = np.pad(mask.astype(np.uint8), 1)
    flood = m.copy()
    ffmask = np.zeros((m.shape[0] + 2, m.shape[1] + 2), np.uint8)
    cv2.floodFill(flood, ffmask, (0, 0), 1)
    return (m | (1 - flood)).astype(bool)[1:-1, 1:-1]


def cell_chroma(rgb: np.ndarray, *, background: np.ndarray | None = None) -> np.ndarray:
    """How much a pixel looks like white-cell material rather than red cell or glass.

    ``(OD_G - OD_B) / (mean OD + 0.05)``: nucleus and cytoplasm of white cells
    absorb green but hardly blue, red cells absorb both about equally and glass
    neither (the +0.05 keeps the ratio at ~0 on near-empty glass).
    """
    return cell_chroma_from_od(optical_density(rgb, background=background))


def cell_chroma_from_od(od: np.ndarray) -> np.ndarray:
    """:func:`cell_chroma` of an ``(H, W, 3)`` optical-density image."""
    return (od[..., 1] - od[..., 2]) / (od.mean(axis=2) + 0.05)


def default_red_cell_px(shape: tuple[int, ...]) -> float:
    """Expected red-cell diameter in pixels when the caller does not give one: ``sqrt(H * W) / 5``.

    A red cell (~7.5 um) spans about a fifth of a CellaVision frame (PBC, ~32
    px at 160 px) and of a BCCD 640x480 field (~100 px); every size default of
    the cell modules is a multiple of it.
    """
    h, w = shape[:2]
    return float(np.sqrt(h * w) / 5.0)


def resolve_red_cell_px(shape: tuple[int, ...], red_cell_px: float | None) -> float:
    """``red_cell_px`` as a float, or :func:`default_red_cell_px` of ``shape`` when it is None."""
    return default_red_cell_px(shape) if red_cell_px is None else float(red_cell_px)
