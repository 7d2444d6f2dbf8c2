"""Stain primitives, cell segmentation, shape, features and the normal reference (hematovision.cells.*)."""

from __future__ import annotations

import ast
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hematovision.cells import morphology as M
from hematovision.cells import segmentation, stain
from hematovision.cells import shape as cell_shape
from hematovision.errors import InvalidImageError, MorphologyReferenceError, SegmentationError
from tests._data import ROOT, iou, require_data, split_images, synthetic_cell, synthetic_field

PBC_CLASSES = ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet")


# --------------------------------------------------------------------------- import hygiene


def test_core_modules_import_no_heavy_libraries():
    code = (
        "import sys, hematovision.cells.stain, hematovision.cells.morphology, hematovision.mesh, hematovision.mesh.glb\n"
        "heavy = ('tensorflow', 'open3d', 'skimage', 'tifffile', 'trimesh', 'gradio', 'keras')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


CELLS = ROOT / "hematovision" / "cells"


def test_cells_modules_and_functions_stay_short():
    for path in sorted(CELLS.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        assert len(source.splitlines()) <= 350, path
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno + 1 <= 60, f"{path.name}:{node.lineno} {node.name}"


def test_no_cells_module_uses_another_modules_private_names():
    for path in sorted(CELLS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                   for a in n.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not [a.name for a in node.names if a.name.startswith("_")], f"{path.name}:{node.lineno}"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
                assert not node.attr.startswith("_"), f"{path.name}:{node.lineno} {node.value.id}.{node.attr}"


# --------------------------------------------------------------------------- stain primitives


def test_optical_density_is_zero_on_background_and_grows_with_absorption():
    rgb = np.full((32, 32, 3), 240, np.uint8)
    rgb[10:20, 10:20] = (24, 240, 240)  # absorbs red only
    od = stain.optical_density(rgb)
    assert od.shape == (32, 32, 3) and od.dtype == np.float32
    assert np.allclose(od[0, 0], 0.0)
    assert od[15, 15, 0] == pytest.approx(math.log10(241 / 25), abs=1e-4)
    assert od[15, 15, 1] == pytest.approx(0.0, abs=1e-6)


def test_nuclear_stain_separates_nucleus_from_red_cell_and_glass():
    rgb, _, nuc = synthetic_cell(red_cells=True)
    density = stain.nuclear_stain(rgb)
    # OD_R - OD_B of the nucleus colour against the background colour (edges blurred slightly lower).
    expected = math.log10(251 / 89) - math.log10(206 / 139)
    assert np.median(density[nuc]) == pytest.approx(expected, abs=0.03)
    assert np.percentile(density[~nuc], 90) < stain.MIN_NUCLEAR_THRESHOLD
    mask = stain.nucleus_mask(rgb)
    assert (mask & nuc).sum() / (mask | nuc).sum() > 0.9


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32), "image.png"])
def test_stain_functions_refuse_non_rgb_arrays(bad):
    with pytest.raises(InvalidImageError):
        stain.optical_density(bad)


def test_otsu_threshold_respects_floor_and_handles_3d():
    values = np.concatenate([np.full(100, 0.1), np.full(100, 0.9)]).reshape(2, 10, 10).astype(np.float32)
    t = stain.otsu_threshold(values)
    assert ((values > t) == (values > 0.5)).all()
    assert stain.otsu_threshold(np.zeros((4, 4), np.float32), floor=0.2) == 0.2


def test_fill_holes():
    ring = np.zeros((20, 20), np.uint8)
    cv2.circle(ring, (10, 10), 7, 1, 2)
    filled = stain.fill_holes(ring.astype(bool))
    assert filled[10, 10] and not filled[0, 0]


# --------------------------------------------------------------------------- whole fields


def test_find_nucleated_cells_on_a_synthetic_field_merges_lobes_and_skips_platelets():
    rgb, boxes = synthetic_field()
    regions = segmentation.find_nucleated_cells(rgb)
    assert len(regions) == 2  # two white cells; red cells and platelets ignored; both lobes = one cell
    for box in boxes:
        assert max(iou(box, r.bbox) for r in regions) > 0.85
    r = regions[0]
    x0, y0, x1, y1 = r.bbox
    assert r.cell_mask.shape == r.nucleus_mask.shape == (y1 - y0, x1 - x0)
    assert r.area == r.cell_mask.sum() and r.nucleus_area == r.nucleus_mask.sum()
    cell, nuc = r.full_masks(rgb.shape)
    assert cell.sum() == r.area and not (nuc & ~cell).any()
    assert x0 <= r.centroid[0] < x1 and y0 <= r.centroid[1] < y1


def test_find_nucleated_cells_area_bounds_and_empty_field():
    rgb, _ = synthetic_field()
    assert segmentation.find_nucleated_cells(rgb, min_area=10**6) == []
    blank = np.full((120, 160, 3), 245, np.uint8)
    assert segmentation.find_nucleated_cells(blank) == []


def test_find_nucleated_cells_on_real_bccd_fields():
    root = require_data("bccd")
    with open(root / "boxes.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["cell_type"] == "WBC"]
    names = sorted({r["image"] for r in rows})[:12]
    matched = total = false_pos = 0
    for name in names:
        rgb = cv2.cvtColor(cv2.imread(str(root / "images" / name)), cv2.COLOR_BGR2RGB)
        found = [r.bbox for r in segmentation.find_nucleated_cells(rgb)]
        truth = [tuple(int(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")) for r in rows if r["image"] == name]
        hits = sum(any(iou(t, f) >= 0.5 for f in found) for t in truth)
        matched += hits
        total += len(truth)
        false_pos += max(0, len(found) - hits)
    assert matched / total >= 0.9, (matched, total)
    assert false_pos <= 2, false_pos


# --------------------------------------------------------------------------- one segmentation path


def test_morphology_offers_the_segmentation_modules_own_segment():
    assert M.segment is segmentation.segment and M.Segmentation is segmentation.Segmentation
    assert M.SURE_NUCLEUS_AREA_S2 == segmentation.SURE_NUCLEUS_AREA_S2


def test_segment_field_detection_and_mesh_run_the_same_segmentation(monkeypatch):
    from hematovision.cells import detection
    from hematovision.mesh import surface

    calls = []
    real = segmentation.find_nuclei
    monkeypatch.setattr(segmentation, "find_nuclei", lambda maps: calls.append(maps) or real(maps))
    rgb, _, _ = synthetic_cell()
    M.segment(rgb)
    detection.find_cells(rgb)
    surface.image_surface(rgb)
    assert len(calls) == 3 and all(isinstance(m, segmentation.StainMaps) for m in calls)


def test_nucleus_mask_is_the_segmentation_nucleus_mask():
    rgb, _, _ = synthetic_cell(kind="bilobed")
    maps = segmentation.stain_maps(rgb, red_cell_px=stain.default_red_cell_px(rgb.shape))
    assert np.array_equal(stain.nucleus_mask(rgb), stain.nucleus_mask_from_density(maps.density))
    assert np.array_equal(np.logical_or.reduce(segmentation.find_nuclei(maps)), stain.nucleus_mask(rgb))


# --------------------------------------------------------------------------- segmentation + features


@pytest.mark.parametrize("kind,lobes", [("round", 1), ("bilobed", 2), ("trilobed", 3)])
def test_segment_and_measure_a_synthetic_cell(kind, lobes):
    rgb, cell, nuc = synthetic_cell(kind=kind)
    seg = M.segment(rgb)
    assert seg.nucleated and seg.n_nucleated == 1
    assert (seg.nucleus_mask & nuc).sum() / (seg.nucleus_mask | nuc).sum() > 0.9
    assert (seg.cell_mask & cell).sum() / (seg.cell_mask | cell).sum() > 0.9
    f = M.measure(rgb, segmentation=seg)
    assert f.lobe_count == lobes
    assert f.nc_ratio == pytest.approx(nuc.sum() / cell.sum(), rel=0.08)
    assert f.cell_circularity > 0.9 and f.cell_eccentricity < 0.25 and f.cell_solidity > 0.97
    assert f.cell_diameter_rbc == pytest.approx(2 * 28 / 32, rel=0.05)  # radius 28 px, red cell 160 / 5 px
    assert f.nucleus_color is not None and f.nucleus_color[2] > f.nucleus_color[1]  # purple: blue > green
    assert f.um_per_px is None and f.cell_area_um2 is None


def test_measure_reports_um2_when_the_scale_is_known():
    rgb, _, _ = synthetic_cell()
    f = M.measure(rgb, um_per_px=0.25)
    assert f.cell_area_um2 == pytest.approx(f.cell_area_px * 0.0625)
    assert f.nucleus_area_um2 == pytest.approx(f.nucleus_area_px * 0.0625)
    assert json.loads(json.dumps(f.to_json()))["lobe_count"] == f.lobe_count


@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), "0.25"])
def test_measure_refuses_a_bad_scale(scale):
    rgb, _, _ = synthetic_cell()
    with pytest.raises(ValueError):
        M.measure(rgb, um_per_px=scale)


def test_segment_picks_the_cell_nearest_the_centre():
    rgb, _, _ = synthetic_cell(size=200, centre=(100, 100), red_cells=False)
    other, _, _ = synthetic_cell(size=200, centre=(40, 40), cell_radius=20, nucleus_radius=12, red_cells=False)
    both = np.minimum(rgb, other)
    seg = M.segment(both)
    ys, xs = np.nonzero(seg.nucleus_mask)
    assert abs(xs.mean() - 100) < 3 and abs(ys.mean() - 100) < 3
    assert seg.n_nucleated == 2


def test_small_pale_object_is_an_anucleate_cell():
    rgb = np.full((160, 160, 3), 250, np.uint8)
    rgb[:] = (250, 228, 205)
    cv2.circle(rgb, (80, 80), 8, (160, 120, 180), -1)  # a platelet
    seg = M.segment(rgb)
    assert not seg.nucleated and not seg.nucleus_mask.any() and seg.cell_mask[80, 80]
    f = M.measure(rgb, segmentation=seg)
    assert f.nucleus_area_px == 0 and f.nc_ratio == 0 and f.lobe_count == 0 and f.cytoplasm_color is not None


@pytest.mark.parametrize("image", [np.full((64, 64, 3), 255, np.uint8), np.full((64, 64, 3), (250, 228, 205), np.uint8)])
def test_blank_image_raises_segmentation_error(image):
    with pytest.raises(SegmentationError) as info:
        M.segment(image)
    assert isinstance(info.value, ValueError) and "stain" in str(info.value)


def test_measure_refuses_mismatched_segmentation():
    rgb, _, _ = synthetic_cell()
    seg = M.segment(rgb)
    with pytest.raises(ValueError):
        M.measure(rgb[:100, :100], segmentation=seg)


@pytest.mark.parametrize("shape,circ,ecc", [("disc", 1.0, 0.0), ("ellipse", None, math.sqrt(1 - 0.25))])
def test_shape_measures(shape, circ, ecc):
    m = np.zeros((120, 120), np.uint8)
    if shape == "disc":
        cv2.circle(m, (60, 60), 30, 1, -1)
    else:
        cv2.ellipse(m, (60, 60), (40, 20), 0, 0, 360, 1, -1)
    f = cell_shape.shape_features(m.astype(bool))
    if circ is not None:
        assert f.circularity == pytest.approx(circ, abs=0.06)
    assert f.eccentricity == pytest.approx(ecc, abs=0.03)
    assert f.solidity == pytest.approx(1.0, abs=0.03)
    assert f.area == m.sum() and f.equivalent_diameter == cell_shape.equivalent_diameter(f.area)
    assert cell_shape.solidity(m.astype(bool)) == f.solidity


def test_shape_of_a_concave_and_an_empty_mask():
    m = np.zeros((60, 60), bool)
    m[10:50, 10:20] = m[40:50, 10:50] = True  # an L: its hull adds the missing triangle
    f = cell_shape.shape_features(m)
    assert f.area == 400 + 300 and f.solidity == pytest.approx(700 / (700 + 30 * 30 / 2), abs=0.03)
    assert cell_shape.bounding_box(m) == (10, 10, 50, 50)
    assert cell_shape.equivalent_diameter(math.pi) == pytest.approx(2.0)
    assert cell_shape.shape_features(np.zeros((5, 5), bool)) == cell_shape.ShapeFeatures(0, 0.0, 0.0, 0.0, 0.0)
    assert cell_shape.solidity(np.zeros((5, 5), bool)) == 0.0


def test_count_lobes_of_an_empty_mask_is_zero():
    assert M.count_lobes(np.zeros((10, 10), bool)) == 0


# --------------------------------------------------------------------------- reference and compare


@pytest.fixture
def small_reference(tmp_path):
    rng = np.random.default_rng(0)
    levels = tuple(float(p) for p in range(0, 101, 5))
    lymph = {"nc_ratio": rng.normal(0.8, 0.05, 400), "lobe_count": np.ones(400), "cell_diameter_rbc": rng.normal(1.4, 0.1, 400)}
    doc = {
        "format": M.REFERENCE_FORMAT,
        "quantile_levels": list(levels),
        "label_map": M.REFERENCE_LABEL_MAP,
        "classes": {"lymphocyte": {"features": {k: M.summarize(v, levels) for k, v in lymph.items()}}},
    }
    path = tmp_path / "wbc.morphology.json"
    path.write_text(json.dumps(doc))
    return M.load_reference(path)


def _features(**overrides) -> M.CellFeatures:
    base = dict(nucleated=True, cell_area_px=1000, nucleus_area_px=800, cell_diameter_rbc=1.4, nucleus_diameter_rbc=1.2,
                nc_ratio=0.8, cell_circularity=0.9, cell_eccentricity=0.3, cell_solidity=0.97, nucleus_circularity=0.9,
                nucleus_eccentricity=0.3, nucleus_solidity=0.97, lobe_count=1, nucleus_color=(90.0, 50.0, 140.0),
                cytoplasm_color=(200.0, 190.0, 220.0), granularity=0.04, chromatin_texture=0.06)
    base.update(overrides)
    return M.CellFeatures(**base)


@pytest.mark.parametrize("label", ["lymphocyte", "benign", "early_pre_b", "pre_b", "pro_b"])
def test_compare_maps_all_labels_to_the_lymphocyte_reference(small_reference, label):
    out = {c.name: c for c in M.compare(_features(nc_ratio=0.97, lobe_count=1), label, small_reference)}
    assert set(out) == {"nc_ratio", "lobe_count", "cell_diameter_rbc"}  # only features the reference has
    assert out["nc_ratio"].status == "high" and out["nc_ratio"].abnormal and out["nc_ratio"].percentile == 100.0
    assert out["nc_ratio"].z > 3 and out["nc_ratio"].reference_label == "lymphocyte"
    assert out["lobe_count"].status == "normal" and out["lobe_count"].percentile == 50.0  # mid-rank of a tie
    assert out["lobe_count"].z is None  # no spread in the reference


@pytest.mark.parametrize("value,status,pct", [(0.8, "normal", 50.0), (0.5, "low", 0.0), (0.9, "high", None)])
def test_compare_position_in_the_reference(small_reference, value, status, pct):
    (c,) = M.compare(_features(nc_ratio=value), "lymphocyte", small_reference, names=("nc_ratio",))
    assert c.status == status
    if pct is not None:
        assert c.percentile == pytest.approx(pct, abs=3)
    assert 0.0 <= c.percentile <= 100.0


def test_compare_unknown_label(small_reference):
    with pytest.raises(MorphologyReferenceError) as info:
        M.compare(_features(), "dragon", small_reference)
    assert isinstance(info.value, ValueError) and "lymphocyte" in str(info.value)


@pytest.mark.parametrize("content", ["not json", '{"format": "other"}', '{"format": "%s", "classes": 3}' % M.REFERENCE_FORMAT])
def test_load_reference_refuses_malformed_files(tmp_path, content):
    path = tmp_path / "x.morphology.json"
    path.write_text(content)
    with pytest.raises(MorphologyReferenceError):
        M.load_reference(path)


@pytest.mark.parametrize("model,expected", [("models/wbc.json", "models/wbc.morphology.json"),
                                            ("m/all.tflite", "m/all.morphology.json")])
def test_reference_path_for(model, expected):
    assert M.reference_path_for(model) == Path(expected)


def test_shipped_reference_loads_and_orders_classes_like_haematology():
    path = ROOT / "models" / "wbc.morphology.json"
    if not path.exists():
        pytest.skip(f"{path} not generated yet (python -m training.morphology_reference --data DATA/pbc)")
    ref = M.load_reference(path)
    assert set(ref.labels) == set(PBC_CLASSES)
    med = {c: {k: v["median"] for k, v in ref.classes[c]["features"].items()} for c in ref.labels}
    assert med["lymphocyte"]["nc_ratio"] > med["neutrophil"]["nc_ratio"]
    assert med["neutrophil"]["lobe_count"] > med["lymphocyte"]["lobe_count"]
    assert min(med, key=lambda c: med[c]["cell_diameter_rbc"]) == "platelet"
    assert ref.meta["command"].startswith("python -m training.morphology_reference")


# --------------------------------------------------------------------------- real PBC images


@pytest.fixture(scope="module")
def pbc_features():
    out = {}
    for label in PBC_CLASSES:
        paths = split_images("pbc", "test", label, 8)
        out[label] = [(M.segment(p), p) for p in paths]
    return out


def test_pbc_white_cells_segment(pbc_features):
    for label, items in pbc_features.items():
        if label == "platelet":
            continue
        for seg, path in items:
            s2 = seg.red_cell_px ** 2
            assert seg.nucleated, path
            assert segmentation.MIN_NUCLEUS_AREA_S2 * s2 <= seg.nucleus_mask.sum() <= segmentation.MAX_NUCLEUS_AREA_S2 * s2, path


def test_pbc_medians_differ_as_haematology_says(pbc_features):
    med = {}
    for label, items in pbc_features.items():
        feats = [M.measure(p, segmentation=seg) for seg, p in items]
        med[label] = {k: float(np.median([getattr(f, k) for f in feats])) for k in ("nc_ratio", "lobe_count", "cell_area_px")}
    assert med["lymphocyte"]["nc_ratio"] > med["neutrophil"]["nc_ratio"] + 0.2
    assert med["neutrophil"]["lobe_count"] > med["lymphocyte"]["lobe_count"]
    assert min(med, key=lambda c: med[c]["cell_area_px"]) == "platelet"
    assert med["monocyte"]["cell_area_px"] > med["lymphocyte"]["cell_area_px"]


# --------------------------------------------------------------------------- the repo's example images


def _examples(label: str) -> list[Path]:
    paths = sorted((ROOT / "examples" / "wbc").glob(f"{label}__*.jpg"))
    if not paths:
        pytest.skip(f"no examples/wbc/{label}__*.jpg in this checkout")
    return paths


@pytest.mark.parametrize("label", [c for c in PBC_CLASSES if c != "platelet"])
def test_examples_white_cells_are_nucleated(label):
    for path in _examples(label):
        f = M.measure(path)
        assert f.nucleated and 0.2 < f.nc_ratio < 1.0, path
        assert f.lobe_count == (2 if label in ("neutrophil", "eosinophil") else 1), path


def test_examples_platelets_are_anucleate():
    for path in _examples("platelet"):
        f = M.measure(path)
        assert not f.nucleated and f.cell_diameter_rbc < 1.0, path


def test_foreground_mask_covers_red_and_white_cells():
    rgb, cell, _ = synthetic_cell()
    fg = stain.foreground_mask(rgb)
    assert fg[cell].mean() > 0.85  # the pale cytoplasm is the faintest part
    assert 0.3 < fg.mean() < 0.7  # red cells included, glass not


# Measured with the code before the segmentation was unified (git HEAD of the refactor) and the pinned
# requirements.txt (numpy 2.4.6, opencv 5.0.0.93, Pillow 12.3.0); the refactor kept every value exactly.
PINNED_NAMES = ("lymphocyte__LY_115727.jpg", "neutrophil__BNE_107370.jpg", "platelet__PLATELET_100790.jpg")
PINNED = {  # segmentation attribute or feature: one value per image of PINNED_NAMES
    "bbox": ((57, 58, 103, 104), (43, 54, 117, 117), (66, 71, 96, 102)),
    "n_nucleated": (1, 1, 0),
    "nucleated": (True, True, False),
    "cell_area_px": (1692, 3186, 658),
    "nucleus_area_px": (1434, 1454, 0),
    "cell_diameter_rbc": (1.4504583427303217, 1.9903431878439224, 0.9045196953807996),
    "nucleus_diameter_rbc": (1.3353024832697609, 1.3445819728393278, 0.0),
    "nc_ratio": (0.8475177304964538, 0.4563716258631513, 0.0),
    "cell_circularity": (0.9285585511280116, 0.5110310201240695, 0.9158610712071152),
    "cell_eccentricity": (0.4362734504876642, 0.5443749370580853, 0.3670409273842459),
    "cell_solidity": (0.9690721649484536, 0.8714442013129103, 0.9522431259044862),
    "nucleus_circularity": (0.9509889635093802, 0.5816271212260288, 0.0),
    "nucleus_eccentricity": (0.42509370021245796, 0.7734764884968125, 0.0),
    "nucleus_solidity": (0.9755102040816327, 0.8892966360856269, 0.0),
    "lobe_count": (1, 2, 0),
    "nucleus_color": ((83.58, 39.96, 130.58), (104.53, 52.85, 140.43), None),
    "cytoplasm_color": ((206.53, 177.22, 193.66), (197.74, 149.94, 175.41), (161.52, 116.03, 165.16)),
    "granularity": (0.045320626348257065, 0.04236055910587311, 0.0401473231613636),
    "chromatin_texture": (0.061762627214193344, 0.07614046335220337, 0.0),
}


@pytest.mark.parametrize("column,name", list(enumerate(PINNED_NAMES)))
def test_example_segmentation_and_features_are_pinned(column, name):
    path = ROOT / "examples" / "wbc" / name
    if not path.exists():
        pytest.skip(f"no {path} in this checkout")
    seg = M.segment(path)
    got = M.measure(path, segmentation=seg)
    assert seg.red_cell_px == 32.0
    for key, values in PINNED.items():
        value, expected = getattr(seg if key in ("bbox", "n_nucleated") else got, key), values[column]
        assert value == (pytest.approx(expected, abs=1e-12) if isinstance(expected, float) else expected), key
