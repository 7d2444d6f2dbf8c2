"""The cross-lab report's arithmetic, the reframing step and the CAM localisation figure, on hand-made data."""

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from hematovision.cells.reframe import PBC_FILL, central_object_side, frame_to_red_cells, reframe_cell
from training.cam_localisation import mass_inside
from training.crosslab import labelled_cells, red_cell_scaled, score
from training.metrics import wilson


@dataclass
class FakePrediction:
    label: str
    uncertain: bool = False
    out_of_distribution: bool = False


def test_score_counts_flagged_and_confidently_wrong():
    labels = ["neutrophil"] * 6 + ["lymphocyte"] * 4
    preds = ([FakePrediction("neutrophil")] * 4 + [FakePrediction("ig", uncertain=True), FakePrediction("ig")]
             + [FakePrediction("lymphocyte")] * 3 + [FakePrediction("monocyte", out_of_distribution=True)])
    s = score(preds, labels)
    assert s["accuracy"]["value"] == pytest.approx(0.7)
    assert s["flagged"]["value"] == pytest.approx(0.2)
    assert s["accuracy_not_flagged"]["n"] == 8
    assert s["accuracy_not_flagged"]["value"] == pytest.approx(7 / 8)
    assert s["confidently_wrong"]["value"] == pytest.approx(0.1)
    assert s["per_class_recall"]["neutrophil"]["value"] == pytest.approx(4 / 6)
    assert s["per_class_recall"]["lymphocyte"]["value"] == pytest.approx(3 / 4)
    # F1 neutrophil: p = 1, r = 2/3 -> 0.8; lymphocyte: p = 1, r = 3/4 -> 6/7.
    assert s["macro_f1_present_classes"] == pytest.approx((0.8 + 6 / 7) / 2)
    assert s["confusion"]["true_rows"] == ["lymphocyte", "neutrophil"]
    assert sum(map(sum, s["confusion"]["matrix"])) == 10


@pytest.mark.parametrize("correct,n,lo,hi", [(0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (50, 100, 0.4038, 0.5962)])
def test_wilson_interval_golden(correct, n, lo, hi):
    got = wilson(correct, n)
    assert got == pytest.approx((lo, hi), abs=2e-4)


def test_labelled_cells_reads_both_layouts_and_refuses_empty(tmp_path):
    img = np.full((20, 20, 3), 200, np.uint8)
    for root in (tmp_path / "a", tmp_path / "b" / "images"):
        (root / "lymphocyte").mkdir(parents=True)
        cv2.imwrite(str(root / "lymphocyte" / "1.png"), img)
    assert [lab for _, lab in labelled_cells(tmp_path / "a")] == ["lymphocyte"]
    assert [lab for _, lab in labelled_cells(tmp_path / "b")] == ["lymphocyte"]
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        labelled_cells(tmp_path / "empty")


def _disc_image(size: int, radius: int) -> np.ndarray:
    img = np.full((size, size, 3), (235, 225, 200), np.uint8)
    cv2.circle(img, (size // 2, size // 2), radius, (120, 60, 150), -1)
    return img


def test_reframe_pads_a_tight_crop_to_pbc_fill_and_keeps_the_cell_pixels():
    tight = _disc_image(120, 50)  # the cell spans ~100 of 120 px
    side = central_object_side(tight)
    assert 95 <= side <= 105
    out = reframe_cell(tight)
    assert out.shape[0] == out.shape[1] == round(side / PBC_FILL)
    top = (out.shape[0] - 120) // 2
    np.testing.assert_array_equal(out[top:top + 120, top:top + 120], tight)
    corner = out[2, 2].astype(int)
    assert np.abs(corner - (235, 225, 200)).max() <= 6  # padded with the glass colour


def test_reframe_leaves_loose_frames_alone():
    loose = _disc_image(160, 20)
    assert reframe_cell(loose) is loose


def test_reframe_refuses_nonsense_fill():
    with pytest.raises(ValueError, match="fill"):
        reframe_cell(_disc_image(60, 10), fill=0.0)


@pytest.mark.parametrize("size,red_px,side", [(120, 40.0, 200), (300, 20.0, 100), (160, 32.0, 160), (90, 30.0, 150)])
def test_frame_to_red_cells_makes_the_frame_five_red_cells_wide(size, red_px, side):
    img = _disc_image(size, size // 5)
    out = frame_to_red_cells(img, red_px)
    assert out.shape[:2] == (side, side)
    inner = min(size, side)
    a, b = (side - inner) // 2, (size - inner) // 2
    np.testing.assert_array_equal(out[a:a + inner, a:a + inner], img[b:b + inner, b:b + inner])  # centred, unscaled


@pytest.mark.parametrize("red_px,cells", [(0.0, 5.0), (float("nan"), 5.0), (30.0, 0.5)])
def test_frame_to_red_cells_refuses_nonsense(red_px, cells):
    with pytest.raises(ValueError, match="red_cell_px"):
        frame_to_red_cells(_disc_image(60, 10), red_px, red_cells=cells)


class FakeClassifier:
    """Names a cell by its frame side, so the test sees which framing reached the model."""

    def predict(self, rgb, *, cam=False):
        return FakePrediction("lymphocyte" if abs(rgb.shape[0] - 200) <= 20 else "monocyte")  # 5 x 40 px +- 10 %


def test_red_cell_scaled_frames_the_lab_at_its_calibrated_size_or_says_why_not():
    from tests.test_red_cells import field

    fields = [field(40, size=(160, 160), n=8, seed=i) for i in range(4)]  # red cells 40 px: 5 of them are 200 px
    got = red_cell_scaled(FakeClassifier(), fields, ["lymphocyte"] * 4)
    assert got["accuracy"]["value"] == 1.0 and got["images_measured"] == 4
    assert got["red_cell_px"] == pytest.approx(40, rel=0.1)
    crops = [_disc_image(120, 50)] * 3 + fields[:1]  # single-cell crops: no red cells to calibrate on
    got = red_cell_scaled(FakeClassifier(), crops, ["lymphocyte"] * 4)
    assert "n" not in got and got["not_scored"] == "only 1 of 4 images show enough red cells"


def test_mass_inside_golden():
    cam = np.zeros((4, 4))
    cam[1:3, 1:3] = 1.0
    cam[0, 0] = 2.0
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    assert mass_inside(cam, mask) == pytest.approx(4 / 6)
    assert np.isnan(mass_inside(np.zeros((4, 4)), mask))


@pytest.mark.parametrize("grid, low, high", [((4, 4), 0.3, 0.7), ((8, 8), 0.6, 0.95), ((16, 16), 0.75, 1.0)])
def test_the_cam_ceiling_rises_with_the_feature_grid(grid, low, high):
    """A centred disc covering ~10 % of a 128 px frame, like a PBC cell: a finer map can point more precisely."""
    import numpy as np

    from training.cam_localisation import best_map_share

    yy, xx = np.mgrid[:128, :128]
    mask = (yy - 63.5) ** 2 + (xx - 63.5) ** 2 <= 23 ** 2
    assert low <= best_map_share(mask, grid) <= high


def test_localisation_counts_all_zero_maps_apart(monkeypatch):
    """An image whose CAM is all zero has no mass to place: left out of the mean, and counted, not lost."""
    from types import SimpleNamespace

    from training import cam_localisation

    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    cams = iter([np.pad(np.ones((4, 4)), 2), np.zeros((8, 8)), np.ones((8, 8))])
    monkeypatch.setattr(cam_localisation, "load_image", lambda path: np.zeros((8, 8, 3), np.uint8))
    monkeypatch.setattr(cam_localisation, "central_cell_mask", lambda rgb: mask)
    clf = SimpleNamespace(spec=SimpleNamespace(raw={"outputs": {"features": {"shape": [1, 2, 2, 8]}}}),
                          predict=lambda rgb, cam: SimpleNamespace(cam=next(cams)))
    r = cam_localisation.localisation(clf, ["a", "b", "c"])
    assert (r["n"], r["skipped_no_cell"], r["all_zero_maps"]) == (2, 0, 1)
    assert r["mean_cam_mass_inside_cell"] == pytest.approx((1.0 + 0.25) / 2)


def test_cells_outside_a_scope_are_counted_flagged_and_named():
    """A scoped model's report on cells of classes the scope leaves out: how many were flagged, and how many had the
    true class as their (outside-scope) first choice; nothing for an unscoped model or when no such cells exist."""
    from types import SimpleNamespace

    from hematovision.scope import DifferentialScope
    from training.crosslab import outside_scope_cells

    labels = ["neutrophil", "ig", "ig", "ig", "platelet"]
    scope = DifferentialScope.of(["neutrophil", "lymphocyte"], ["ig", "lymphocyte", "neutrophil", "platelet"])
    preds = [SimpleNamespace(uncertain=False, out_of_distribution=False, outside_scope=None),
             SimpleNamespace(uncertain=True, out_of_distribution=False, outside_scope="ig"),
             SimpleNamespace(uncertain=True, out_of_distribution=False, outside_scope="platelet"),
             SimpleNamespace(uncertain=False, out_of_distribution=False, outside_scope=None),  # an ig named confidently
             SimpleNamespace(uncertain=False, out_of_distribution=True, outside_scope=None)]
    out = outside_scope_cells(preds, labels, scope)
    assert out["n"] == 4 and out["counts"] == {"ig": 3, "platelet": 1}
    assert out["flagged"]["value"] == 0.75 and out["first_choice_names_the_class"]["value"] == 0.25
    assert outside_scope_cells(preds, labels, None) is None
    assert outside_scope_cells(preds[:1], labels[:1], scope) is None
