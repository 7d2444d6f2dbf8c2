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
    nucleus_mask(rgb, *, threshold=None) -> (H, W) bool
    foreground_mask(rgb, *, threshold=None) -> (H, W) bool          # any stained object
    default_red_cell_px(shape) -> float                             # size unit of every default
    find_nucleated_cells(rgb, *, min_area=None, max_area=None, red_cell_px=None) -> list[CellRegion]
    CellRegion(bbox, centroid, area, nucleus_area, cell_mask, nucleus_mask, score).full_masks(shape)
    nucleus_groups(mask, *, merge_px, min_fragment_px=0) -> list[(H, W) bool]   # lobes merged per cell
    trace_cell(chroma, nucleus, *, reach_px) -> (H, W) bool                     # nucleus -> whole cell

``find_nucleated_cells`` finds every white cell (and erythroblast) in a whole
field, e.g. a 640x480 microscope frame: nucleus pixels are thresholded, nearby
nucleus fragments (the lobes of a neutrophil) are merged into one cell, and
the cell body (cytoplasm included) is traced outward from the nucleus. Each
:class:`CellRegion` gives the bounding box of the whole cell ``(x0, y0, x1,
y1)`` (x1, y1 exclusive), the centroid ``(x, y)``, the areas and boolean
masks of the cell and its nucleus cropped to the box. ``min_area`` /
``max_area`` bound the *nucleus* area in pixels; by default they follow the
expected red-cell diameter in pixels (:func:`default_red_cell_px`), so
the defaults fit frames that are about 5 red cells across (pass
``red_cell_px`` at other magnifications).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import InvalidImageError

# Floors under the per-image Otsu thresholds: in a field with no white cell
# Otsu would split noise. Measured on PBC (CellaVision) and BCCD fields, where
# nuclei reach an R-B optical density of 0.13-0.5 and red cells stay < 0.03.
MIN_NUCLEAR_THRESHOLD = 0.06
MIN_FOREGROUND_THRESHOLD = 0.03


@dataclass(frozen=True, eq=False)
class CellRegion:
    """One nucleated cell found in a field.

    ``bbox`` is ``(x0, y0, x1, y1)`` in pixels of the input image, x1/y1
    exclusive; ``cell_mask`` and ``nucleus_mask`` are boolean crops of that box.
    ``centroid`` is ``(x, y)`` of the nucleus in image pixels. ``score`` is the
    mean nuclear stain density of the nucleus (higher = more confident).
    """

    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    area: int
    nucleus_area: int
    cell_mask: np.ndarray = field(repr=False)
    nucleus_mask: np.ndarray = field(repr=False)
    score: float = 0.0

    def full_masks(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(cell, nucleus) boolean masks at the full image ``shape`` (H, W)."""
        x0, y0, x1, y1 = self.bbox
        cell = np.zeros(shape[:2], bool)
        nuc = np.zeros(shape[:2], bool)
        cell[y0:y1, x0:x1] = self.cell_mask
        nuc[y0:y1, x0:x1] = self.nucleus_mask
        return cell, nuc


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InvalidImageError(
            "expected an (H, W, 3) uint8 RGB array; convert other inputs with hematovision.load_image first."
        )
    return rgb


def estimate_background(rgb: np.ndarray) -> np.ndarray:
    """The illumination ``I0`` per channel: median colour of the brightest 10 % of pixels."""
    rgb = _check_rgb(rgb)
    flat = rgb.reshape(-1, 3)
    brightness = flat.astype(np.int32).sum(axis=1)
    bright = flat[brightness >= np.percentile(brightness, 90)]
    return np.maximum(np.median(bright, axis=0), 1.0).astype(np.float32)


def optical_density(rgb: np.ndarray, *, background: np.ndarray | None = None) -> np.ndarray:
    """Per-channel optical density ``log10((I0 + 1) / (I + 1))``, clipped at 0."""
    rgb = _check_rgb(rgb)
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
    od = optical_density(rgb, background=background)
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


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(values, (0, 0), sigma) if sigma > 0 else values


def nucleus_mask(rgb: np.ndarray, *, threshold: float | None = None) -> np.ndarray:
    """Pixels of nuclear chromatin: smoothed :func:`nuclear_stain` above Otsu's threshold.

    The Otsu threshold is computed on the stained pixels only (so a big white
    field does not dominate) and never below :data:`MIN_NUCLEAR_THRESHOLD`.
    """
    return _nucleus_mask_from(_smooth(nuclear_stain(rgb), 1.0), threshold)


def _nucleus_mask_from(density: np.ndarray, threshold: float | None) -> np.ndarray:
    if threshold is None:
        stained = density[density > MIN_NUCLEAR_THRESHOLD / 2]
        threshold = otsu_threshold(stained, floor=MIN_NUCLEAR_THRESHOLD) if stained.size else MIN_NUCLEAR_THRESHOLD
    mask = (density > threshold).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disc(1))
    return fill_holes(mask.astype(bool))


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def foreground_mask(rgb: np.ndarray, *, threshold: float | None = None) -> np.ndarray:
    """Any stained object (red cells, white cells, platelets): density above Otsu's threshold.

    Otsu runs on the density capped at its 90th percentile, so that a dark
    white cell does not pull the threshold above the red cells.
    """
    density = _smooth(stain_density(rgb), 1.0)
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
    return _chroma_from(optical_density(rgb, background=background))


def _chroma_from(od: np.ndarray) -> np.ndarray:
    return (od[..., 1] - od[..., 2]) / (od.mean(axis=2) + 0.05)


def default_red_cell_px(shape: tuple[int, ...]) -> float:
    """Expected red-cell diameter in pixels when the caller does not give one: ``sqrt(H * W) / 5``.

    A red cell (~7.5 um) spans about a fifth of a CellaVision frame (PBC, ~32
    px at 160 px) and of a BCCD 640x480 field (~100 px); every size default of
    this module is a multiple of it.
    """
    h, w = shape[:2]
    return float(np.sqrt(h * w) / 5.0)


# Size rules, in units of the red-cell diameter s (~7.5 um). A nucleus covers
# at least ~0.25 s^2 (a 4.2 um disc: small erythroblast nuclei; platelets, 2-3
# um, mostly stay below; on BCCD 0.25 s^2 cut false detections by a third
# against 0.12 s^2 at the same recall) and at most 5 s^2 (~2.5 s across, a
# blast); neutrophil lobes lie < ~2 um (0.3 s) apart, so fragments within
# 0.15 s grown each way merge; cytoplasm reaches at most ~0.7 s beyond the
# nucleus (monocyte).
MIN_NUCLEUS_AREA_S2 = 0.25
MAX_NUCLEUS_AREA_S2 = 5.0
LOBE_MERGE_S = 0.15
CYTOPLASM_REACH_S = 0.7
#: Retry with a lower threshold when the body is < this x the nucleus, and
#: accept the retry when its solidity is at least PALE_CYTOPLASM_SOLIDITY.
PALE_CYTOPLASM_GAIN = 1.6
PALE_CYTOPLASM_SOLIDITY = 0.9
#: Floor under the local Otsu threshold of :func:`cell_chroma` (red cells ~0.1).
MIN_CHROMA_THRESHOLD = 0.15


def find_nucleated_cells(
    rgb: np.ndarray,
    *,
    min_area: float | None = None,
    max_area: float | None = None,
    red_cell_px: float | None = None,
) -> list[CellRegion]:
    """Every nucleated cell in an RGB field, sorted top-to-bottom then left-to-right.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB (use :func:`hematovision.load_image`).
        min_area, max_area: bounds on the *nucleus* area in pixels (all lobes
            together). Defaults: 0.25 s^2 and 5 s^2 with s = ``red_cell_px``.
        red_cell_px: red-cell diameter in pixels; default :func:`default_red_cell_px`.
    """
    rgb = _check_rgb(rgb)
    s = default_red_cell_px(rgb.shape) if red_cell_px is None else float(red_cell_px)
    lo = MIN_NUCLEUS_AREA_S2 * s * s if min_area is None else float(min_area)
    hi = MAX_NUCLEUS_AREA_S2 * s * s if max_area is None else float(max_area)
    od = optical_density(rgb)
    density = _smooth(np.maximum(od[..., 0] - od[..., 2], 0.0), 1.0)
    chroma = _smooth(_chroma_from(od), max(0.5, s / 40.0))
    nuclei = nucleus_groups(_nucleus_mask_from(density, None), merge_px=LOBE_MERGE_S * s, min_fragment_px=0.01 * s * s)
    regions = []
    for nucleus in nuclei:
        area = int(nucleus.sum())
        if not lo <= area <= hi:
            continue
        cell = trace_cell(chroma, nucleus, reach_px=CYTOPLASM_REACH_S * s)
        regions.append(_region(cell, nucleus, float(density[nucleus].mean())))
    return sorted(regions, key=lambda r: (r.bbox[1], r.bbox[0]))


def nucleus_groups(mask: np.ndarray, *, merge_px: float, min_fragment_px: float = 0.0) -> list[np.ndarray]:
    """Split a nucleus mask into per-cell nuclei, merging fragments closer than ``merge_px``.

    Fragments smaller than ``min_fragment_px`` (specks, granules) are dropped
    first; the rest are grouped by the connected components of the mask
    dilated by ``merge_px / 2`` (two lobes merge when their gap < merge_px).
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_fragment_px
    clean = keep[labels]
    radius = max(1, int(round(merge_px / 2)))
    grown = cv2.dilate(clean.astype(np.uint8), _disc(radius))
    n_groups, groups = cv2.connectedComponents(grown, connectivity=8)
    groups = np.where(clean, groups, 0)
    return [groups == k for k in range(1, n_groups) if np.any(groups == k)]


def trace_cell(chroma: np.ndarray, nucleus: np.ndarray, *, reach_px: float) -> np.ndarray:
    """The whole cell (nucleus + cytoplasm) around one nucleus, as a full-size boolean mask.

    In a window reaching ``reach_px`` beyond the nucleus, pixels whose
    :func:`cell_chroma` exceeds the window's Otsu threshold (floor
    :data:`MIN_CHROMA_THRESHOLD`) are cell material; thin bridges to touching
    red cells are cut by an opening, the part connected to the nucleus kept,
    its holes filled, and everything farther than ``reach_px`` dropped.
    """
    ys, xs = np.nonzero(nucleus)
    h, w = nucleus.shape
    m = int(np.ceil(reach_px)) + 2
    y0, y1 = max(0, ys.min() - m), min(h, ys.max() + m + 1)
    x0, x1 = max(0, xs.min() - m), min(w, xs.max() + m + 1)
    c = chroma[y0:y1, x0:x1]
    nuc = nucleus[y0:y1, x0:x1]
    far = cv2.distanceTransform((~nuc).astype(np.uint8), cv2.DIST_L2, 5) > reach_px
    radius = max(1, int(round(reach_px / 12)))
    t = otsu_threshold(np.clip(c, 0.0, None), floor=MIN_CHROMA_THRESHOLD)
    body = _body_at(c, t, nuc, far, radius)
    if body.sum() < PALE_CYTOPLASM_GAIN * nuc.sum():
        # Otsu split nucleus from everything else: the cytoplasm is pale (a
        # neutrophil's pink-lilac). Retry one level down (Otsu of the rest) and
        # keep it if the result is still a compact, cell-like blob.
        rest = c[(c < t) & ~far]
        if rest.size:
            t_low = otsu_threshold(np.clip(rest, 0.0, None), floor=MIN_CHROMA_THRESHOLD)
            low = _body_at(c, t_low, nuc, far, radius)
            if _solidity(low) >= PALE_CYTOPLASM_SOLIDITY:
                body = low
    out = np.zeros_like(nucleus)
    out[y0:y1, x0:x1] = body
    return out


def _body_at(c: np.ndarray, t: float, nuc: np.ndarray, far: np.ndarray, radius: int) -> np.ndarray:
    """Cell material above ``t``, opened, within reach, connected to the nucleus, holes filled."""
    body = cv2.morphologyEx((c > t).astype(np.uint8), cv2.MORPH_OPEN, _disc(radius)).astype(bool) | nuc
    body &= ~far
    _, labels = cv2.connectedComponents(body.astype(np.uint8), connectivity=8)
    touching = np.unique(labels[nuc])
    body = np.isin(labels, touching[touching > 0])
    body = cv2.morphologyEx(body.astype(np.uint8), cv2.MORPH_CLOSE, _disc(radius)).astype(bool)
    return fill_holes(body) | nuc


def _solidity(mask: np.ndarray) -> float:
    """Area / convex-hull area of a mask (1 for convex shapes)."""
    pts = cv2.findNonZero(mask.astype(np.uint8))
    if pts is None:
        return 0.0
    hull = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(hull, [cv2.convexHull(pts)], 1)
    return float(mask.sum()) / max(1.0, float(hull.sum()))


def _region(cell: np.ndarray, nucleus: np.ndarray, score: float) -> CellRegion:
    ys, xs = np.nonzero(cell)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    ny, nx = np.nonzero(nucleus)
    return CellRegion(
        bbox=(x0, y0, x1, y1),
        centroid=(float(nx.mean()), float(ny.mean())),
        area=int(cell.sum()),
        nucleus_area=int(nucleus.sum()),
        cell_mask=cell[y0:y1, x0:x1].copy(),
        nucleus_mask=nucleus[y0:y1, x0:x1].copy(),
        score=score,
    )
