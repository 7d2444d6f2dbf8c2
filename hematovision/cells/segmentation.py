"""The one segmentation path of the cell modules: nuclei, then whole cells, in a field or at the centre.

Numpy + OpenCV only (the Raspberry Pi core). Built on the optical-density
primitives of :mod:`hematovision.cells.stain` (Beer-Lambert: dyes add up in
``OD = log10(I0 / I)``). Every caller goes the same way:

1. :func:`stain_maps`: one optical-density image gives two maps, the nucleus
   density ``OD_R - OD_B`` (purple chromatin absorbs red, passes blue; ~0 on
   red cells and glass) and the cell chroma ``(OD_G - OD_B) / (mean OD + 0.05)``
   (white-cell material absorbs green, hardly blue), both Gaussian-smoothed;
2. :func:`find_nuclei`: the density above its Otsu threshold, fragments closer
   than :data:`LOBE_MERGE_S` red cells merged (the lobes of a neutrophil);
3. :func:`trace_cell`: the cell body (cytoplasm included) traced outward from
   each nucleus in the chroma map.

Public API::

    stain_maps(rgb, *, red_cell_px) -> StainMaps(density, chroma, red_cell_px)
    find_nuclei(maps) -> list[(H, W) bool]                                      # one mask per cell
    nucleus_groups(mask, *, merge_px, min_fragment_px=0.0) -> list[(H, W) bool]   # lobes merged per cell
    trace_cell(chroma, nucleus, *, reach_px) -> (H, W) bool                     # nucleus -> whole cell
    find_nucleated_cells(rgb, *, min_area=None, max_area=None, red_cell_px=None) -> list[CellRegion]
    CellRegion(bbox, centroid, area, nucleus_area, cell_mask, nucleus_mask, score).full_masks(shape)
    segment(image, *, red_cell_px=None, min_nucleus_area=None) -> Segmentation  # the central cell
    Segmentation(cell_mask, nucleus_mask, nucleated, bbox, red_cell_px, n_nucleated).from_region(...)

``find_nucleated_cells`` finds every white cell (and erythroblast) of a whole
field (the station, :mod:`hematovision.cells.detection`); ``min_area`` /
``max_area`` bound the *nucleus* area in pixels. ``segment`` picks the object
nearest the image centre (PBC / CellaVision crops are centred on their cell;
:mod:`hematovision.cells.morphology`, the 3D surface): a central object smaller
or paler than a nucleus (a platelet, or a red cell with an inclusion; see
:data:`SURE_NUCLEUS_AREA_S2`) is returned with ``nucleated=False``, the object
itself as the cell and an empty nucleus. Every size default is a multiple of
the red-cell diameter ``s`` (:func:`hematovision.cells.stain.default_red_cell_px`,
``sqrt(H * W) / 5``); pass ``red_cell_px`` at other magnifications.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import SegmentationError
from ..images import ImageInput, load_image
from .shape import Box, bounding_box, equivalent_diameter, solidity
from .stain import (
    DENSITY_SMOOTHING_PX, cell_chroma_from_od, check_rgb, disc, fill_holes, nuclear_stain_from_od,
    nucleus_mask_from_density, optical_density, otsu_threshold, resolve_red_cell_px, smooth,
)

# Size rules, in units of the red-cell diameter s (~7.5 um). A nucleus covers
# at least ~0.25 s^2 (a 4.2 um disc: small erythroblast nuclei; platelets, 2-3
# um, mostly stay below; on BCCD 0.25 s^2 cut false detections by a third
# against 0.12 s^2 at the same recall) and at most 5 s^2 (~2.5 s across, a
# blast); neutrophil lobes lie < ~2 um (0.3 s) apart, so fragments within
# 0.15 s grown each way merge; fragments under 0.01 s^2 are specks and
# granules; cytoplasm reaches at most ~0.7 s beyond the nucleus (monocyte).
MIN_NUCLEUS_AREA_S2 = 0.25
MAX_NUCLEUS_AREA_S2 = 5.0
LOBE_MERGE_S = 0.15
MIN_FRAGMENT_S2 = 0.01
CYTOPLASM_REACH_S = 0.7
#: Retry with a lower threshold when the body is < this x the nucleus, and
#: accept the retry when its solidity is at least PALE_CYTOPLASM_SOLIDITY.
PALE_CYTOPLASM_GAIN = 1.6
PALE_CYTOPLASM_SOLIDITY = 0.9
#: Floor under the local Otsu threshold of :func:`~hematovision.cells.stain.cell_chroma` (red cells ~0.1).
MIN_CHROMA_THRESHOLD = 0.15
#: A central object of 0.25-0.5 red-cell diameters^2 is a nucleus only when
#: dense (mean R-B optical density >= 0.22; a small erythroblast nucleus is
#: >= 0.23, a platelet's granulomere ~0.18). Calibrated on PBC train: all
#: white cells kept, ~80 % of platelets called anucleate.
SURE_NUCLEUS_AREA_S2 = 0.5
DENSE_NUCLEUS_OD = 0.22
#: Reach of the platelet body beyond its stained granulomere, in red-cell diameters.
ANUCLEATE_REACH_S = 0.2


@dataclass(frozen=True, eq=False)
class StainMaps:
    """The smoothed maps every segmentation reads, from one optical-density image.

    ``density`` is the nucleus density ``max(OD_R - OD_B, 0)`` smoothed by
    :data:`~hematovision.cells.stain.DENSITY_SMOOTHING_PX`; ``chroma`` the
    cell chroma smoothed by ``max(0.5, s / 40)`` px (``s`` = ``red_cell_px``),
    which evens out granules without blurring the cell's edge.
    """

    density: np.ndarray = field(repr=False)
    chroma: np.ndarray = field(repr=False)
    red_cell_px: float


def stain_maps(rgb: np.ndarray, *, red_cell_px: float) -> StainMaps:
    """:class:`StainMaps` of an ``(H, W, 3)`` uint8 RGB image at a red-cell diameter of ``red_cell_px``."""
    od = optical_density(rgb)
    density = smooth(nuclear_stain_from_od(od), sigma=DENSITY_SMOOTHING_PX)
    chroma = smooth(cell_chroma_from_od(od), sigma=max(0.5, red_cell_px / 40.0))
    return StainMaps(density, chroma, red_cell_px)


def find_nuclei(maps: StainMaps) -> list[np.ndarray]:
    """One full-size mask per cell's nucleus (its lobes merged), of any size; specks dropped."""
    s = maps.red_cell_px
    return nucleus_groups(nucleus_mask_from_density(maps.density), merge_px=LOBE_MERGE_S * s,
                          min_fragment_px=MIN_FRAGMENT_S2 * s * s)


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
    grown = cv2.dilate(clean.astype(np.uint8), disc(radius))
    n_groups, groups = cv2.connectedComponents(grown, connectivity=8)
    groups = np.where(clean, groups, 0)
    return [groups == k for k in range(1, n_groups) if np.any(groups == k)]


def trace_cell(chroma: np.ndarray, nucleus: np.ndarray, *, reach_px: float) -> np.ndarray:
    """The whole cell (nucleus + cytoplasm) around one nucleus, as a full-size boolean mask.

    In a window reaching ``reach_px`` beyond the nucleus, pixels whose
    :func:`~hematovision.cells.stain.cell_chroma` exceeds the window's Otsu
    threshold (floor :data:`MIN_CHROMA_THRESHOLD`) are cell material; thin
    bridges to touching red cells are cut by an opening, the part connected to
    the nucleus kept, its holes filled, and everything farther than
    ``reach_px`` dropped. When that body is barely larger than the nucleus,
    Otsu split the nucleus from everything else: the cytoplasm is pale (a
    neutrophil's pink-lilac), so the threshold is retried one level down (Otsu
    of the rest) and kept if the result is still a compact (solid) blob.
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
        rest = c[(c < t) & ~far]
        if rest.size:
            t_low = otsu_threshold(np.clip(rest, 0.0, None), floor=MIN_CHROMA_THRESHOLD)
            low = _body_at(c, t_low, nuc, far, radius)
            if solidity(low) >= PALE_CYTOPLASM_SOLIDITY:
                body = low
    out = np.zeros_like(nucleus)
    out[y0:y1, x0:x1] = body
    return out


def _body_at(c: np.ndarray, t: float, nuc: np.ndarray, far: np.ndarray, radius: int) -> np.ndarray:
    """Cell material above ``t``, opened, within reach, connected to the nucleus, holes filled."""
    body = cv2.morphologyEx((c > t).astype(np.uint8), cv2.MORPH_OPEN, disc(radius)).astype(bool) | nuc
    body &= ~far
    _, labels = cv2.connectedComponents(body.astype(np.uint8), connectivity=8)
    touching = np.unique(labels[nuc])
    body = np.isin(labels, touching[touching > 0])
    body = cv2.morphologyEx(body.astype(np.uint8), cv2.MORPH_CLOSE, disc(radius)).astype(bool)
    return fill_holes(body) | nuc


# --------------------------------------------------------------------------- every cell of a field


@dataclass(frozen=True, eq=False)
class CellRegion:
    """One nucleated cell found in a field.

    ``bbox`` is ``(x0, y0, x1, y1)`` in pixels of the input image, x1/y1
    exclusive; ``cell_mask`` and ``nucleus_mask`` are boolean crops of that box.
    ``centroid`` is ``(x, y)`` of the nucleus in image pixels. ``score`` is the
    mean nuclear stain density of the nucleus (higher = more confident).
    """

    bbox: Box
    centroid: tuple[float, float]
    area: int
    nucleus_area: int
    cell_mask: np.ndarray = field(repr=False)
    nucleus_mask: np.ndarray = field(repr=False)
    score: float = 0.0

    @classmethod
    def of(cls, cell: np.ndarray, nucleus: np.ndarray, *, score: float) -> "CellRegion":
        """The region of full-size ``cell`` and ``nucleus`` masks, cropped to the cell's box."""
        x0, y0, x1, y1 = bounding_box(cell)
        ny, nx = np.nonzero(nucleus)
        return cls(bbox=(x0, y0, x1, y1), centroid=(float(nx.mean()), float(ny.mean())), area=int(cell.sum()),
                   nucleus_area=int(nucleus.sum()), cell_mask=cell[y0:y1, x0:x1].copy(),
                   nucleus_mask=nucleus[y0:y1, x0:x1].copy(), score=score)

    def full_masks(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(cell, nucleus) boolean masks at the full image ``shape`` (H, W)."""
        x0, y0, x1, y1 = self.bbox
        cell = np.zeros(shape[:2], bool)
        nuc = np.zeros(shape[:2], bool)
        cell[y0:y1, x0:x1] = self.cell_mask
        nuc[y0:y1, x0:x1] = self.nucleus_mask
        return cell, nuc


def find_nucleated_cells(rgb: np.ndarray, *, min_area: float | None = None, max_area: float | None = None,
                         red_cell_px: float | None = None) -> list[CellRegion]:
    """Every nucleated cell in an RGB field, sorted top-to-bottom then left-to-right.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB (use :func:`hematovision.load_image`).
        min_area, max_area: bounds on the *nucleus* area in pixels (all lobes
            together). Defaults: 0.25 s^2 and 5 s^2 with s = ``red_cell_px``.
        red_cell_px: red-cell diameter in pixels; default :func:`~hematovision.cells.stain.default_red_cell_px`.
    """
    rgb = check_rgb(rgb)
    s = resolve_red_cell_px(rgb.shape, red_cell_px)
    lo = MIN_NUCLEUS_AREA_S2 * s * s if min_area is None else float(min_area)
    hi = MAX_NUCLEUS_AREA_S2 * s * s if max_area is None else float(max_area)
    maps = stain_maps(rgb, red_cell_px=s)
    regions = [
        CellRegion.of(trace_cell(maps.chroma, nucleus, reach_px=CYTOPLASM_REACH_S * s), nucleus,
                      score=float(maps.density[nucleus].mean()))
        for nucleus in find_nuclei(maps)
        if lo <= int(nucleus.sum()) <= hi
    ]
    return sorted(regions, key=lambda r: (r.bbox[1], r.bbox[0]))


# --------------------------------------------------------------------------- the central cell


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Full-size boolean masks of one cell and its nucleus (empty when ``nucleated`` is False)."""

    cell_mask: np.ndarray = field(repr=False)
    nucleus_mask: np.ndarray = field(repr=False)
    nucleated: bool
    bbox: Box
    red_cell_px: float
    n_nucleated: int = 1

    @classmethod
    def from_region(cls, region: CellRegion, shape: tuple[int, ...], *, red_cell_px: float | None = None,
                    ) -> "Segmentation":
        """Wrap a :class:`CellRegion` found in a field of ``shape``."""
        cell, nucleus = region.full_masks(shape[:2])
        return cls(cell, nucleus, True, region.bbox, resolve_red_cell_px(shape, red_cell_px))


def segment(image: ImageInput, *, red_cell_px: float | None = None, min_nucleus_area: float | None = None,
            ) -> Segmentation:
    """Segment the cell nearest the image centre (see the module docstring).

    Args:
        image: anything :func:`hematovision.load_image` accepts.
        red_cell_px: red-cell diameter in px; default ``sqrt(H * W) / 5``.
        min_nucleus_area: smallest nucleus in px; default 0.25 red-cell diameters squared.

    Raises:
        SegmentationError: nothing stained in the image.
    """
    rgb = load_image(image)
    s = resolve_red_cell_px(rgb.shape, red_cell_px)
    lo = MIN_NUCLEUS_AREA_S2 * s * s if min_nucleus_area is None else float(min_nucleus_area)
    maps = stain_maps(rgb, red_cell_px=s)
    objects = find_nuclei(maps)
    if not objects:
        raise SegmentationError(
            "no stained cell found: no pixel has the purple of a Romanowsky-stained nucleus or platelet. "
            "Check that the image is a Wright/Giemsa/May-Grunwald-Giemsa blood smear in colour."
        )
    h, w = maps.density.shape
    central = min(objects, key=lambda m: _edge_distance(m, (h - 1) / 2.0, (w - 1) / 2.0))
    sure = max(lo, SURE_NUCLEUS_AREA_S2 * s * s)
    n_nucleated = sum(is_nucleus(m, maps.density, min_area=lo, sure_area=sure) for m in objects)
    if is_nucleus(central, maps.density, min_area=lo, sure_area=sure):
        cell = trace_cell(maps.chroma, central, reach_px=CYTOPLASM_REACH_S * s)
        return Segmentation(cell, central, True, bounding_box(cell), s, n_nucleated)
    cell = trace_cell(maps.chroma, central, reach_px=ANUCLEATE_REACH_S * s) | central
    return Segmentation(cell, np.zeros_like(central), False, bounding_box(cell), s, n_nucleated)


def is_nucleus(mask: np.ndarray, density: np.ndarray, *, min_area: float, sure_area: float) -> bool:
    """A stained object is a nucleus when at least ``sure_area`` px, or ``min_area`` px and dense.

    Dense: mean nucleus density (``OD_R - OD_B``) of at least :data:`DENSE_NUCLEUS_OD`.
    """
    area = int(mask.sum())
    return area >= sure_area or (area >= min_area and float(density[mask].mean()) >= DENSE_NUCLEUS_OD)


def _edge_distance(mask: np.ndarray, cy: float, cx: float) -> float:
    """Distance from (cy, cx) to the object's equivalent disc (0 inside): favours big central objects."""
    ys, xs = np.nonzero(mask)
    r_eq = equivalent_diameter(len(ys)) / 2.0
    return max(0.0, math.hypot(ys.mean() - cy, xs.mean() - cx) - r_eq)
