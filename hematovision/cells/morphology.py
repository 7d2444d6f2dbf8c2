"""Cell morphology: segment a stained cell, measure it, compare it with a normal reference.

Numpy + OpenCV only (the Raspberry Pi core). Built on :mod:`hematovision.cells.stain`.

Public API::

    segment(image, *, red_cell_px=None, min_nucleus_area=None) -> Segmentation
    measure(image, *, um_per_px=None, segmentation=None, red_cell_px=None) -> CellFeatures
    load_reference(path) -> Reference
    compare(features, label, reference, *, names=None) -> list[FeatureComparison]
    reference_path_for(model_path) -> Path            # models/wbc.json -> models/wbc.morphology.json
    REFERENCE_LABEL_MAP                               # 'all' model labels -> reference class

``segment`` picks the cell nearest the image centre (PBC / CellaVision crops
are centred on their cell). A nucleus is the purple chromatin of
:func:`hematovision.cells.stain.nucleus_mask`, its lobes merged; a cell whose
central stained object is smaller or paler than a nucleus (a platelet, or a
red cell with an inclusion; see :data:`SURE_NUCLEUS_AREA_S2`) is returned with ``nucleated=False``, the object
itself as the cell and an empty nucleus. No stained object at all raises
:class:`~hematovision.errors.SegmentationError`. For whole fields with many
cells use :func:`hematovision.cells.stain.find_nucleated_cells` and
:meth:`Segmentation.from_region`.

Sizes are in pixels, in um^2 when ``um_per_px`` is given, and always also in
red-cell diameters (``*_diameter_rbc``: equivalent-disc diameter divided by
the expected red-cell diameter, :func:`hematovision.cells.stain.default_red_cell_px`),
which survives resizing the image and is what :func:`compare` uses.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import stain
from ..errors import MorphologyReferenceError, SegmentationError
from ..images import ImageInput, load_image

#: A central object of 0.25-0.5 red-cell diameters^2 is a nucleus only when
#: dense (mean R-B optical density >= 0.22; a small erythroblast nucleus is
#: >= 0.23, a platelet's granulomere ~0.18). Calibrated on PBC train: all
#: white cells kept, ~80 % of platelets called anucleate.
SURE_NUCLEUS_AREA_S2 = 0.5
DENSE_NUCLEUS_OD = 0.22
#: Reach of the platelet body beyond its stained granulomere, in red-cell diameters.
ANUCLEATE_REACH_S = 0.2
#: Cut levels of :func:`count_lobes`, as fractions of the nucleus' thickest
#: point, and the smallest lobe core relative to the largest (chosen on PBC
#: train: neutrophil median 2, lymphocyte/monocyte/erythroblast 1).
LOBE_LEVELS = (0.45, 0.55, 0.65, 0.75)
MIN_LOBE_CORE = 0.1

#: Features :func:`compare` uses by default: free of image scale and stain colour.
COMPARED_FEATURES = (
    "cell_diameter_rbc", "nucleus_diameter_rbc", "nc_ratio", "cell_circularity", "cell_eccentricity",
    "cell_solidity", "nucleus_circularity", "nucleus_solidity", "lobe_count", "granularity", "chromatin_texture",
)

#: The ``all`` model's classes are B-lymphoid (hematogones and lymphoblasts):
#: they are compared with the normal lymphocyte; a blast shows as a high N:C
#: ratio, a larger nucleus and finer chromatin than that reference.
REFERENCE_LABEL_MAP = {
    "benign": "lymphocyte",
    "early_pre_b": "lymphocyte",
    "pre_b": "lymphocyte",
    "pro_b": "lymphocyte",
}

REFERENCE_FORMAT = "hematovision.morphology-reference/1"


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Full-size boolean masks of one cell and its nucleus (empty when ``nucleated`` is False)."""

    cell_mask: np.ndarray = field(repr=False)
    nucleus_mask: np.ndarray = field(repr=False)
    nucleated: bool
    bbox: tuple[int, int, int, int]
    red_cell_px: float
    n_nucleated: int = 1

    @classmethod
    def from_region(cls, region: stain.CellRegion, shape: tuple[int, ...], *, red_cell_px: float | None = None,
                    ) -> "Segmentation":
        """Wrap a :class:`~hematovision.cells.stain.CellRegion` found in a field of ``shape``."""
        cell, nucleus = region.full_masks(shape[:2])
        s = stain.default_red_cell_px(shape) if red_cell_px is None else float(red_cell_px)
        return cls(cell, nucleus, True, region.bbox, s)


@dataclass(frozen=True)
class CellFeatures:
    """Morphology of one cell. Areas in px (and um^2 when the scale is known).

    ``nc_ratio`` is nucleus area / cell area (0..1, the N:C as image analysis
    reports it); circularity = 4 pi A / P^2 (1 for a disc); eccentricity of the
    moment ellipse (0 for a disc); solidity = area / convex-hull area;
    ``granularity`` and ``chromatin_texture`` are the standard deviation of
    fine (band-pass) stain-density detail in the cytoplasm and nucleus.
    """

    nucleated: bool
    cell_area_px: int
    nucleus_area_px: int
    cell_diameter_rbc: float
    nucleus_diameter_rbc: float
    nc_ratio: float
    cell_circularity: float
    cell_eccentricity: float
    cell_solidity: float
    nucleus_circularity: float
    nucleus_eccentricity: float
    nucleus_solidity: float
    lobe_count: int
    nucleus_color: tuple[float, float, float] | None
    cytoplasm_color: tuple[float, float, float] | None
    granularity: float
    chromatin_texture: float
    um_per_px: float | None = None
    cell_area_um2: float | None = None
    nucleus_area_um2: float | None = None

    def to_json(self) -> dict:
        """A JSON-ready dict (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class FeatureComparison:
    """Where one feature value sits in the normal reference of ``reference_label``.

    ``percentile`` is in [0, 100]; ``z`` is the robust z-score (value - median)
    / (1.4826 MAD), None when the reference has no spread; ``status`` is
    ``"low"`` / ``"high"`` outside the reference 5-95 % range, else ``"normal"``.
    """

    name: str
    value: float
    median: float
    low: float
    high: float
    percentile: float
    z: float | None
    status: str
    reference_label: str

    @property
    def abnormal(self) -> bool:
        return self.status != "normal"


@dataclass(frozen=True, eq=False)
class Reference:
    """A loaded morphology reference: per class and feature, summary statistics and quantiles."""

    classes: dict = field(repr=False)
    quantile_levels: tuple[float, ...] = field(repr=False)
    label_map: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict, repr=False)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.classes)

    def resolve(self, label: str) -> str:
        """The reference class used for ``label`` (itself, or via ``label_map``)."""
        if label in self.classes:
            return label
        mapped = self.label_map.get(label, REFERENCE_LABEL_MAP.get(label))
        if mapped in self.classes:
            return mapped
        raise MorphologyReferenceError(
            f"no morphology reference for label {label!r}; the reference has {sorted(self.classes)} "
            f"and maps {sorted(self.label_map or REFERENCE_LABEL_MAP)}."
        )


# --------------------------------------------------------------------------- segmentation


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
    s = stain.default_red_cell_px(rgb.shape) if red_cell_px is None else float(red_cell_px)
    lo = stain.MIN_NUCLEUS_AREA_S2 * s * s if min_nucleus_area is None else float(min_nucleus_area)
    od = stain.optical_density(rgb)
    density = cv2.GaussianBlur(np.maximum(od[..., 0] - od[..., 2], 0.0), (0, 0), 1.0)
    objects = stain.nucleus_groups(stain._nucleus_mask_from(density, None), merge_px=stain.LOBE_MERGE_S * s,
                                   min_fragment_px=0.01 * s * s)
    if not objects:
        raise SegmentationError(
            "no stained cell found: no pixel has the purple of a Romanowsky-stained nucleus or platelet. "
            "Check that the image is a Wright/Giemsa/May-Grunwald-Giemsa blood smear in colour."
        )
    h, w = density.shape
    central = min(objects, key=lambda m: _edge_distance(m, (h - 1) / 2.0, (w - 1) / 2.0))
    chroma = cv2.GaussianBlur(stain._chroma_from(od), (0, 0), max(0.5, s / 40.0))
    sure = max(lo, SURE_NUCLEUS_AREA_S2 * s * s)

    def is_nucleus(m: np.ndarray) -> bool:
        area = int(m.sum())
        return area >= sure or (area >= lo and float(density[m].mean()) >= DENSE_NUCLEUS_OD)

    nucleated = is_nucleus(central)
    n_nucleated = sum(is_nucleus(m) for m in objects)
    if nucleated:
        cell = stain.trace_cell(chroma, central, reach_px=stain.CYTOPLASM_REACH_S * s)
        nucleus = central
    else:
        cell = stain.trace_cell(chroma, central, reach_px=ANUCLEATE_REACH_S * s) | central
        nucleus = np.zeros_like(central)
    ys, xs = np.nonzero(cell)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return Segmentation(cell, nucleus, nucleated, bbox, s, n_nucleated)


def _edge_distance(mask: np.ndarray, cy: float, cx: float) -> float:
    """Distance from (cy, cx) to the object's equivalent disc (0 inside): favours big central objects."""
    ys, xs = np.nonzero(mask)
    r_eq = math.sqrt(len(ys) / math.pi)
    return max(0.0, math.hypot(ys.mean() - cy, xs.mean() - cx) - r_eq)


# --------------------------------------------------------------------------- features


def measure(image: ImageInput, *, um_per_px: float | None = None, segmentation: Segmentation | None = None,
            red_cell_px: float | None = None) -> CellFeatures:
    """Segment (unless ``segmentation`` is given) and measure the central cell.

    Raises:
        SegmentationError: no cell found (see :func:`segment`).
        ValueError: ``um_per_px`` not a positive number.
    """
    if um_per_px is not None and not (isinstance(um_per_px, (int, float)) and um_per_px > 0):
        raise ValueError(f"um_per_px must be a positive number of micrometres per pixel, got {um_per_px!r}.")
    rgb = load_image(image)
    seg = segment(rgb, red_cell_px=red_cell_px) if segmentation is None else segmentation
    if seg.cell_mask.shape != rgb.shape[:2]:
        raise ValueError(f"segmentation masks are {seg.cell_mask.shape}, the image is {rgb.shape[:2]}; "
                         "segment the same image you measure.")
    cell, nucleus = seg.cell_mask, seg.nucleus_mask & seg.cell_mask
    cytoplasm = cell & ~nucleus
    s = seg.red_cell_px
    a_cell, a_nuc = int(cell.sum()), int(nucleus.sum())
    cell_shape, nuc_shape = _shape(cell), _shape(nucleus)
    detail = _fine_detail(rgb, sigma=max(0.7, s / 40.0))
    area_um = (lambda a: a * um_per_px * um_per_px) if um_per_px else (lambda a: None)
    return CellFeatures(
        nucleated=seg.nucleated,
        cell_area_px=a_cell,
        nucleus_area_px=a_nuc,
        cell_diameter_rbc=_equivalent_diameter(a_cell) / s,
        nucleus_diameter_rbc=_equivalent_diameter(a_nuc) / s,
        nc_ratio=a_nuc / a_cell if a_cell else 0.0,
        cell_circularity=cell_shape[0],
        cell_eccentricity=cell_shape[1],
        cell_solidity=cell_shape[2],
        nucleus_circularity=nuc_shape[0],
        nucleus_eccentricity=nuc_shape[1],
        nucleus_solidity=nuc_shape[2],
        lobe_count=count_lobes(nucleus),
        nucleus_color=_mean_color(rgb, nucleus),
        cytoplasm_color=_mean_color(rgb, cytoplasm),
        granularity=_std(detail, cytoplasm),
        chromatin_texture=_std(detail, nucleus),
        um_per_px=um_per_px,
        cell_area_um2=area_um(a_cell),
        nucleus_area_um2=area_um(a_nuc),
    )


def _equivalent_diameter(area: float) -> float:
    return 2.0 * math.sqrt(area / math.pi)


def _shape(mask: np.ndarray) -> tuple[float, float, float]:
    """(circularity, eccentricity, solidity) of a mask; zeros when empty."""
    area = float(mask.sum())
    if area == 0:
        return 0.0, 0.0, 0.0
    m8 = mask.astype(np.uint8)
    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    # The raw pixel chain over-measures a curve by ~8 % (staircase); its polygon
    # simplification (1 px tolerance) does not. The pixel-count area reaches
    # half a pixel beyond the chain through pixel centres, hence P + pi.
    perimeter = sum(cv2.arcLength(cv2.approxPolyDP(c, 1.0, True), True) for c in contours)
    circularity = min(1.0, 4.0 * math.pi * area / (perimeter + math.pi) ** 2)
    # Eccentricity of the ellipse with the same second moments: sqrt(1 - l_min / l_max).
    mom = cv2.moments(m8, binaryImage=True)
    mu20, mu02, mu11 = mom["mu20"] / mom["m00"], mom["mu02"] / mom["m00"], mom["mu11"] / mom["m00"]
    root = math.sqrt(((mu20 - mu02) / 2.0) ** 2 + mu11 ** 2)
    l_max, l_min = (mu20 + mu02) / 2.0 + root, (mu20 + mu02) / 2.0 - root
    eccentricity = math.sqrt(max(0.0, 1.0 - l_min / l_max)) if l_max > 0 else 0.0
    hull = cv2.convexHull(np.concatenate(contours))
    hull_mask = np.zeros_like(m8)
    cv2.fillPoly(hull_mask, [hull], 1)
    solidity = min(1.0, area / max(1.0, float(hull_mask.sum())))
    return circularity, eccentricity, solidity


def count_lobes(nucleus: np.ndarray) -> int:
    """Number of nuclear lobes: cores left when the thin bridges between lobes are cut.

    The distance transform (DT) is high inside lobes and low on the filaments
    and constrictions joining them. At each level f of :data:`LOBE_LEVELS` the
    nucleus is cut to ``DT > f * max(DT)``; cores of at least
    :data:`MIN_LOBE_CORE` x the largest core are lobes, and the count is the
    largest over levels (a filament is cut at the lowest level, a pinched
    lobe at a higher one). 0 for an empty mask.
    """
    if not nucleus.any():
        return 0
    dist = cv2.distanceTransform(np.pad(nucleus, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    best = 1
    for level in LOBE_LEVELS:
        n, _, stats, _ = cv2.connectedComponentsWithStats((dist > level * dist.max()).astype(np.uint8), connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        if areas.size:
            best = max(best, int((areas >= MIN_LOBE_CORE * areas.max()).sum()))
    return best


def _fine_detail(rgb: np.ndarray, *, sigma: float) -> np.ndarray:
    """Band-pass of the stain density: Gaussian(sigma) - Gaussian(3 sigma) (granules, chromatin clumps)."""
    density = stain.stain_density(rgb)
    return cv2.GaussianBlur(density, (0, 0), sigma) - cv2.GaussianBlur(density, (0, 0), 3.0 * sigma)


def _std(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].std()) if mask.sum() >= 2 else 0.0


def _mean_color(rgb: np.ndarray, mask: np.ndarray) -> tuple[float, float, float] | None:
    if not mask.any():
        return None
    r, g, b = rgb[mask].mean(axis=0)
    return (round(float(r), 2), round(float(g), 2), round(float(b), 2))


# --------------------------------------------------------------------------- normal reference


def reference_path_for(model_path: str | Path) -> Path:
    """The morphology reference beside a model: ``models/wbc.json`` -> ``models/wbc.morphology.json``."""
    path = Path(model_path)
    return path.with_name(path.name.split(".")[0] + ".morphology.json")


def load_reference(path: str | Path) -> Reference:
    """Read a reference written by ``python -m training.morphology_reference``.

    Raises:
        FileNotFoundError: no such file.
        MorphologyReferenceError: not a morphology reference, or malformed.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MorphologyReferenceError(f"{path}: not valid JSON ({exc}); regenerate it with "
                                       "`python -m training.morphology_reference`.") from exc
    if not isinstance(doc, dict) or doc.get("format") != REFERENCE_FORMAT:
        raise MorphologyReferenceError(f"{path}: not a {REFERENCE_FORMAT} file; regenerate it with "
                                       "`python -m training.morphology_reference`.")
    try:
        levels = tuple(float(v) for v in doc["quantile_levels"])
        classes = doc["classes"]
        for label, entry in classes.items():
            for name, stats in entry["features"].items():
                if len(stats["quantiles"]) != len(levels):
                    raise MorphologyReferenceError(f"{path}: {label}/{name} has {len(stats['quantiles'])} "
                                                   f"quantiles, expected {len(levels)}.")
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, MorphologyReferenceError):
            raise
        raise MorphologyReferenceError(f"{path}: malformed morphology reference ({exc!r}).") from exc
    meta = {k: v for k, v in doc.items() if k not in ("classes", "quantile_levels", "label_map")}
    return Reference(classes, levels, dict(doc.get("label_map") or REFERENCE_LABEL_MAP), meta)


def compare(features: CellFeatures, label: str, reference: Reference, *, names: tuple[str, ...] | None = None,
            ) -> list[FeatureComparison]:
    """Position of each feature in the normal reference of ``label`` (mapped for the ``all`` labels).

    Raises:
        MorphologyReferenceError: ``label`` has no reference class.
    """
    ref_label = reference.resolve(label)
    entry = reference.classes[ref_label]["features"]
    levels = np.asarray(reference.quantile_levels)
    out = []
    for name in names or COMPARED_FEATURES:
        value = getattr(features, name, None)
        if value is None or name not in entry:
            continue
        st = entry[name]
        q = np.asarray(st["quantiles"], float)
        spread = 1.4826 * st["mad"] if st["mad"] > 0 else st["std"]
        z = (value - st["median"]) / spread if spread > 0 else None
        status = "low" if value < st["p5"] else "high" if value > st["p95"] else "normal"
        out.append(FeatureComparison(name, float(value), st["median"], st["p5"], st["p95"],
                                     percentile_in(float(value), q, levels), z, status, ref_label))
    return out


def percentile_in(value: float, quantiles: np.ndarray, levels: np.ndarray) -> float:
    """Percentile of ``value`` given the reference's quantile grid; ties (integer features) get the mid-rank."""
    lo = int(np.searchsorted(quantiles, value, side="left"))
    hi = int(np.searchsorted(quantiles, value, side="right"))
    if lo == hi:  # strictly between two grid values: linear interpolation
        if lo == 0:
            return float(levels[0])
        if lo == len(quantiles):
            return float(levels[-1])
        q0, q1 = quantiles[lo - 1], quantiles[lo]
        return float(levels[lo - 1] + (levels[lo] - levels[lo - 1]) * (value - q0) / (q1 - q0))
    return float((levels[lo] + levels[hi - 1]) / 2.0)


def summarize(values: list[float] | np.ndarray, levels: tuple[float, ...]) -> dict:
    """Reference statistics of one feature in one class (what :func:`compare` reads)."""
    v = np.asarray(values, float)
    median = float(np.median(v))
    return {
        "n": int(v.size),
        "median": median,
        "p5": float(np.percentile(v, 5)),
        "p95": float(np.percentile(v, 95)),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "mad": float(np.median(np.abs(v - median))),
        "quantiles": [float(x) for x in np.percentile(v, levels)],
    }
