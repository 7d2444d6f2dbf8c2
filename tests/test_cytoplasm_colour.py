"""The cross-lab cytoplasm-colour diagnostic (``python -m training.cytoplasm_colour``) on synthetic cells of known colour."""

import csv
import json

import cv2
import numpy as np
import pytest

from tests._data import synthetic_cell

PBC_COLOUR = {"neutrophil": (205, 190, 222), "eosinophil": (236, 150, 160)}  # lilac vs salmon-pink cytoplasm


def cell_with_cytoplasm(colour, seed):
    rgb, cell, nucleus = synthetic_cell(seed=seed)
    rgb[cell & ~nucleus] = colour
    return rgb


def write(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture
def folders(tmp_path):
    pbc, lab = tmp_path / "pbc", tmp_path / "otherlab"
    rows = []
    for label, colour in PBC_COLOUR.items():
        for i in range(4):
            write(pbc / "images" / label / f"{i}.png", cell_with_cytoplasm(colour, i))
            rows.append({"path": f"images/{label}/{i}.png", "label": label, "split": "test"})
    with (pbc / "splits.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["path", "label", "split"])
        w.writeheader(), w.writerows(rows)
    for i in range(3):  # this lab's stain gives its neutrophils PBC's eosinophil colour
        write(lab / "neutrophil" / f"{i}.png", cell_with_cytoplasm(PBC_COLOUR["eosinophil"], 10 + i))
        write(lab / "eosinophil" / f"{i}.png", cell_with_cytoplasm(PBC_COLOUR["eosinophil"], 20 + i))
    return pbc, lab


def test_a_stain_that_moves_neutrophils_to_eosinophil_colour_is_reported_so(folders, tmp_path):
    from training.cytoplasm_colour import lab_of_rgb, main

    pbc, lab = folders
    out = tmp_path / "r.json"
    assert main(["--pbc", str(pbc), "--cells", str(lab), "--classes", "neutrophil", "eosinophil", "--per-class", "3",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    ref = report["pbc"]["classes"]
    assert ref["neutrophil"]["n"] == 3 and ref["neutrophil"]["not_measured"] == 0
    # The measured mean is the painted colour's CIELAB (the segmentation's cytoplasm is the painted ring, blur aside).
    expected = lab_of_rgb(PBC_COLOUR["neutrophil"])
    assert [ref["neutrophil"]["mean"][a] for a in "Lab"] == pytest.approx(expected.tolist(), abs=2.5)
    assert report["labs"]["otherlab"]["neutrophil"]["nearest_pbc_class"] == "eosinophil"
    assert report["labs"]["otherlab"]["eosinophil"]["nearest_pbc_class"] == "eosinophil"
    assert "--classes neutrophil eosinophil" in report["command"]


@pytest.mark.parametrize("rgb, lab", [((255, 255, 255), (100, 0, 0)), ((0, 0, 0), (0, 0, 0)), ((255, 0, 0), (53.2, 80.1, 67.2))])
def test_rgb_to_cielab_golden_values(rgb, lab):
    from training.cytoplasm_colour import lab_of_rgb

    assert lab_of_rgb(rgb).tolist() == pytest.approx(lab, abs=0.3)


def test_unmeasurable_and_unreadable_cells_are_counted_not_guessed(tmp_path):
    from training.cytoplasm_colour import measure_cells

    blank = tmp_path / "blank.png"
    write(blank, np.full((64, 64, 3), 240, np.uint8))  # glass only: no cell to measure
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    good = tmp_path / "good.png"
    write(good, cell_with_cytoplasm(PBC_COLOUR["neutrophil"], 1))
    measured = measure_cells([blank, broken, good])
    lab, failed = measured.lab, measured.failed
    assert lab.shape == (1, 3) and failed == 2


def test_a_class_missing_from_pbc_test_is_an_error(folders, tmp_path):
    from training.cytoplasm_colour import main

    pbc, lab = folders
    with pytest.raises(FileNotFoundError, match="no test images labelled 'monocyte'"):
        main(["--pbc", str(pbc), "--cells", str(lab), "--classes", "monocyte", "--out", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()


def test_the_check_sheet_and_the_segmented_cells_share_of_the_frame(folders, tmp_path):
    """What the colours were read from is visible: one sheet row per source and class, and the segmented cell's
    median share of the frame (the synthetic cell's true share) in the report."""
    from tests._data import synthetic_cell
    from training.cytoplasm_colour import main

    pbc, lab = folders
    out, sheet = tmp_path / "r.json", tmp_path / "sheet.png"
    assert main(["--pbc", str(pbc), "--cells", str(lab), "--classes", "neutrophil", "eosinophil", "--per-class", "3",
                 "--out", str(out), "--sheet", str(sheet), "--sheet-cells", "2"]) == 0
    report = json.loads(out.read_text())
    assert report["sheet"] == str(sheet)
    img = cv2.imread(str(sheet))
    assert img.shape == (4 * 2 * 96, 2 * 96 + 2 * 96, 3)  # 4 rows (2 PBC, 2 other-lab), caption + 2 cells of 96 px
    _, cell, _ = synthetic_cell(seed=0)
    share = report["pbc"]["classes"]["neutrophil"]["segmented_cell_share_of_frame_median"]
    assert share == pytest.approx(cell.mean(), rel=0.25)


def test_a_sheet_that_is_not_an_image_name_is_a_usage_error(folders, tmp_path, capsys):
    from training.cytoplasm_colour import main

    pbc, lab = folders
    with pytest.raises(SystemExit) as exit_:
        main(["--pbc", str(pbc), "--cells", str(lab), "--classes", "neutrophil", "--per-class", "1",
              "--out", str(tmp_path / "r.json"), "--sheet", str(tmp_path / "sheet.nope")])
    assert exit_.value.code == 2 and "use a .jpg or .png name" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
