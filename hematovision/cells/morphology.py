"""Cell morphology: measure a segmented stained cell, compare it with a normal reference.

Numpy + OpenCV only (the Raspberry Pi core). Built on :mod:`hematovision.cells.segmentation`
(the cell and its nucleus) and :mod:`hematovision.cells.shape` (areas and outlines).

Public API::

    segment(image, *, red_cell_px=None, min_nucleus_area=None) -> Segmentation
    measure(image, *, um_per_px=None, segmentation=None, red_cell_px=None) -> CellFeatures
    load_reference(path) -> Reference
    compare(features, label, reference, *, names=None) -> list[FeatureComparison]
    reference_path_for(model_path) -> Path            # models/wbc.json -> models/wbc.morphology.json
    REFERENCE_LABEL_MAP                               # 'all' model labels -> reference class

``segment`` and ``Segmentation`` are :func:`hematovision.cells.segmentation.segment`
and its result, imported here: the cell nearest the image centre (PBC /
CellaVision crops are centred on their cell), its nucleus the purple
chromatin with its lobes merged; a platelet is a cell with ``nucleated=False``
and an empty nucleus. No stained object at all raises
:class:`~hematovision.errors.SegmentationError`. For whole fields with many
cells use :func:`hematovision.cells.segmentation.find_nucleated_cells` and
:meth:`Segmentation.from_region`.

Sizes are in pixels, in um^2 when ``um_per_px`` is given, and always also in
red-cell diameters (``*_diameter_rbc``: equivalent-disc diameter divided by
the expected red-cell diameter, :func:`hematovision.cells.stain.default_red_cell_px`),
which survives resizing the image and is what :func:`compare` uses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import stain
from ..errors import MorphologyReferenceError
from ..images import ImageInput, load_image
from .segmentation import Segmentation, segment  # noqa: F401  (public here too: morphology.segment)
from .segmentation import ANUCLEATE_REACH_S, DENSE_NUCLEUS_OD, SURE_NUCLEUS_AREA_S2  # noqa: F401
from .shape import shape_features

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
    cell_shape, nuc_shape = shape_features(cell), shape_features(nucleus)
    a_cell, a_nuc = cell_shape.area, nuc_shape.area
    detail = _fine_detail(rgb, sigma=max(0.7, s / 40.0))
    area_um = (lambda a: a * um_per_px * um_per_px) if um_per_px else (lambda a: None)
    return CellFeatures(
        nucleated=seg.nucleated,
        cell_area_px=a_cell,
        nucleus_area_px=a_nuc,
        cell_diameter_rbc=cell_shape.equivalent_diameter / s,
        nucleus_diameter_rbc=nuc_shape.equivalent_diameter / s,
        nc_ratio=a_nuc / a_cell if a_cell else 0.0,
        cell_circularity=cell_shape.circularity,
        cell_eccentricity=cell_shape.eccentricity,
        cell_solidity=cell_shape.solidity,
        nucleus_circularity=nuc_shape.circularity,
        nucleus_eccentricity=nuc_shape.eccentricity,
        nucleus_solidity=nuc_shape.solidity,
        lobe_count=count_lobes(nucleus),
        nucleus_color=_mean_color(rgb, nucleus),
        cytoplasm_color=_mean_color(rgb, cytoplasm),
        granularity=_std(detail, cytoplasm),
        chromatin_texture=_std(detail, nucleus),
        um_per_px=um_per_px,
        cell_area_um2=area_um(a_cell),
        nucleus_area_um2=area_um(a_nuc),
    )


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
