"""A camera's scale from its own red cells: per-image measurement, calibration over fields, the ``calibrate`` command."""

import contextlib
import json

import cv2
import numpy as np
import pytest

from hematovision.__main__ import main
from hematovision.cells import red_cells
from hematovision.errors import InvalidImageError, NoRedCellsError
from hematovision.images import load_image
from tests.conftest import EXAMPLES, ROOT, require_data

GLASS = (240, 232, 225)
RED_CELL = (214, 148, 156)
NUCLEUS = (105, 65, 165)


def field(diameter: float, *, size=(300, 400), n=12, seed=0, white_cell=False) -> np.ndarray:
    """Separate pink discs of ``diameter`` px (central pallor, +-5 % size) on glass; optionally one white cell."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.zeros((h, w, 3), np.float32)
    img[:] = GLASS
    yy, xx = np.mgrid[0:h, 0:w]
    centres = []
    if white_cell:
        cx, cy, r = w / 2, h / 2, 0.8 * diameter
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = NUCLEUS
        centres.append((cx, cy, 1.6 * diameter))
    for _ in range(400):
        if len(centres) >= n + white_cell:
            break
        cx, cy = rng.uniform(diameter / 2, w - diameter / 2), rng.uniform(diameter / 2, h - diameter / 2)
        if any(np.hypot(cx - x, cy - y) < (diameter + gap) / 2 + 2 for x, y, gap in centres):
            continue
        r = diameter / 2 * rng.uniform(0.95, 1.05)
        d2 = (xx - cx) ** 2 + (yy - cy) ** 2
        img[d2 <= r * r] = RED_CELL
        img[d2 <= (0.35 * r) ** 2] = np.add(RED_CELL, GLASS) / 2
        centres.append((cx, cy, diameter))
    img = cv2.GaussianBlur(img, (0, 0), 1.0) + rng.normal(0, 2, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("diameter,size", [(40, (300, 400)), (60, (300, 400)), (90, (480, 640)), (30, (160, 160))])
def test_the_red_cell_diameter_of_a_synthetic_field_is_measured(diameter, size):
    found = red_cells.measure_red_cell_px(field(diameter, size=size, n=8 if size[0] < 200 else 12))
    assert found is not None
    assert found.diameter_px == pytest.approx(diameter, rel=0.1)
    assert len(found.circles) >= red_cells.MIN_CIRCLES
    assert found.frame_fraction == pytest.approx(found.diameter_px / np.sqrt(size[0] * size[1]))


def test_a_white_cell_is_not_taken_for_a_red_cell():
    rgb = field(40, white_cell=True)
    circles = red_cells.find_red_cells(rgb)
    centre = np.array([rgb.shape[1] / 2, rgb.shape[0] / 2])
    assert len(circles) >= red_cells.MIN_CIRCLES
    assert np.all(np.hypot(*(circles[:, :2] - centre).T) > 30)  # nothing on the nucleus
    assert red_cells.measure_red_cell_px(rgb).diameter_px == pytest.approx(40, rel=0.1)


@pytest.mark.parametrize("rgb", [np.full((200, 200, 3), GLASS, np.uint8), field(40, n=2)], ids=["empty glass", "two red cells"])
def test_too_few_red_cells_give_no_measurement(rgb):
    assert red_cells.measure_red_cell_px(rgb) is None


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), "not an array"])
def test_bad_input_is_a_clear_error(bad):
    with pytest.raises(InvalidImageError):
        red_cells.find_red_cells(bad)


def test_pbc_examples_measure_the_framing_the_model_assumes():
    """Golden: every PBC example's red cells measure within 15 % of PBC's 0.2 x frame side (32 px at 160 px)."""
    paths = sorted((EXAMPLES / "wbc").glob("*.jpg"))
    assert len(paths) >= 10
    fractions = [red_cells.measure_red_cell_px(load_image(p)).frame_fraction for p in paths]
    assert np.median(fractions) == pytest.approx(0.2, rel=0.05)
    assert all(abs(f / 0.2 - 1) < 0.25 for f in fractions)


def test_calibration_is_the_median_over_fields_and_lists_the_unmeasured():
    fields = [(f"f{i}", field(50, seed=i)) for i in range(3)] + [("blank", np.full((300, 400, 3), GLASS, np.uint8))]
    cal = red_cells.calibrate(fields)
    assert cal.red_cell_px == pytest.approx(50, rel=0.1)
    assert cal.images_measured == 3 and cal.images_not_measured == ("blank",)
    assert cal.red_cell_px == pytest.approx(float(np.median([m.diameter_px for _, m in cal.per_image])))
    assert 0 <= cal.spread < 0.1


def test_calibration_without_measurable_fields_says_what_to_do():
    with pytest.raises(NoRedCellsError, match="separate, in-focus red cells"):
        red_cells.calibrate([("blank", np.full((100, 100, 3), GLASS, np.uint8))])
    assert issubclass(NoRedCellsError, ValueError)


# --------------------------------------------------------------------------- the command


@pytest.fixture
def fields_dir(tmp_path):
    folder = tmp_path / "fields"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"field{i}.png"), cv2.cvtColor(field(45, seed=i), cv2.COLOR_RGB2BGR))
    return folder


def test_calibrate_prints_the_station_option_and_draws_the_overlay(fields_dir, tmp_path, capsys):
    overlay = tmp_path / "out" / "overlay.png"
    assert main(["calibrate", str(fields_dir), "--overlay", str(overlay)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["red_cell_px"] == pytest.approx(45, rel=0.1)
    assert out["fields_measured"] == 3 and out["fields_not_measured"] == [] and out["fields_unreadable"] == 0
    assert out["station_option"] == f"--red-cell-px {out['red_cell_px']:g}"
    drawn = cv2.imread(str(overlay))
    assert drawn.shape == (300, 400, 3)
    assert not np.array_equal(drawn, cv2.imread(str(fields_dir / "field0.png")))  # the circles are on it


def test_calibrate_goes_on_past_an_unreadable_file_and_exits_1(fields_dir, capsys):
    (fields_dir / "broken.png").write_bytes(b"not a png")
    assert main(["calibrate", str(fields_dir)]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["fields_measured"] == 3
    assert "broken.png: skipped" in captured.err


def test_calibrate_warns_with_one_field(fields_dir, capsys):
    assert main(["calibrate", str(fields_dir / "field0.png")]) == 0
    assert "only 1 field(s) measured" in capsys.readouterr().err


@pytest.mark.parametrize("inputs,message", [
    (["blank"], "separate, in-focus red cells"),
    (["missing.png"], "no readable image"),
])
def test_calibrate_without_a_measurement_fails_clearly(tmp_path, capsys, inputs, message):
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((200, 200, 3), GLASS, np.uint8))
    paths = [str(tmp_path / ("blank.png" if p == "blank" else p)) for p in inputs]
    assert main(["calibrate", *paths]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


def test_calibrate_refuses_an_overlay_that_would_replace_an_input(fields_dir, capsys):
    target = fields_dir / "field0.png"
    before = target.read_bytes()
    assert main(["calibrate", str(fields_dir), "--overlay", str(target)]) == 2
    assert "destroy" in capsys.readouterr().err
    assert target.read_bytes() == before


@pytest.mark.parametrize("args,message", [
    (["--overlay", "x.txt"], "use a .png or .jpg"),
    (["--min-circles", "0"], "must be >= 1"),
])
def test_calibrate_usage_errors(fields_dir, capsys, args, message):
    with pytest.raises(SystemExit) if args[0] == "--min-circles" else contextlib.nullcontext():
        code = main(["calibrate", str(fields_dir), *args])
        assert code == 2
    assert message in capsys.readouterr().err


def test_red_cell_scale_bench_on_the_real_data(tmp_path):
    """The figures README and the calibrate help quote, re-measured (check parts: not used to choose the settings)."""
    bccd, pbc = require_data("bccd"), require_data("pbc")
    from bench.red_cell_scale import main as bench

    out = tmp_path / "scale.json"
    assert bench(["--bccd", str(bccd), "--pbc", str(pbc), "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    shipped = json.loads((ROOT / "bench" / "results" / "red_cell_scale.json").read_text())
    for part in ("bccd_check", "pbc_check"):
        assert got[part]["within_15_percent"] == pytest.approx(shipped[part]["within_15_percent"], abs=0.02)
    assert got["pbc_check"]["within_15_percent"] >= 0.9 and got["bccd_check"]["within_15_percent"] >= 0.8
