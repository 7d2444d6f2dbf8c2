"""Numbers in a model JSON are checked when it loads: a bad one is a ModelFormatError naming the field, never NaN answers."""

import json
import math

import pytest

from hematovision import ModelFormatError, load_model
from tests.conftest import copy_model


def _set(path, *keys):
    def mutate(value):
        meta = json.loads(path.read_text())
        node = meta
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        path.write_text(json.dumps(meta))  # json writes NaN / Infinity, as a hand-edited file may hold them
    return mutate


@pytest.mark.parametrize("keys, value, field", [
    (("calibration", "temperature"), 0, "calibration.temperature"),
    (("calibration", "temperature"), -1.0, "calibration.temperature"),
    (("calibration", "temperature"), math.nan, "calibration.temperature"),
    (("calibration", "temperature"), "warm", "calibration.temperature|bad field"),
    (("calibration", "uncertain_threshold"), 1.5, "calibration.uncertain_threshold"),
    (("calibration", "uncertain_threshold"), -0.1, "calibration.uncertain_threshold"),
    (("calibration", "uncertain_threshold"), math.inf, "calibration.uncertain_threshold"),
    (("input", "normalization", "scale"), math.nan, "input.normalization.scale"),
    (("input", "normalization", "scale"), 0, "input.normalization.scale"),
    (("input", "normalization", "offset"), math.inf, "input.normalization.offset"),
    (("input", "size"), [0, 32], "input.size"),
    (("morphology", "red_cell_fraction"), 0, "morphology.red_cell_fraction"),
    (("morphology", "red_cell_fraction"), math.nan, "morphology.red_cell_fraction"),
    (("ood", "atypical_threshold"), math.nan, "not a finite number"),
])
def test_a_bad_number_is_refused_with_its_field(tiny_models, tmp_path, keys, value, field):
    path = copy_model(tiny_models["tiny-float32"], tmp_path)
    _set(path, *keys)(value)
    with pytest.raises(ModelFormatError, match=field) as info:
        load_model(path)
    assert "re-export" in str(info.value) and isinstance(info.value, ValueError)


def test_the_cli_says_which_field_and_exits_1(tiny_models, tmp_path, capsys, disc):
    from PIL import Image

    from hematovision.__main__ import main

    path = copy_model(tiny_models["tiny-float32"], tmp_path)
    _set(path, "calibration", "temperature")(0)
    Image.fromarray(disc("red", seed=0)).save(tmp_path / "cell.png")
    assert main(["classify", "--workers", "1", "--model", str(path), str(tmp_path / "cell.png")]) != 0
    captured = capsys.readouterr()
    assert "NaN" not in captured.out and "calibration.temperature must be a finite number > 0" in captured.err


@pytest.mark.parametrize("keys, value", [(("calibration", "temperature"), 0.05), (("calibration", "uncertain_threshold"), 1),
                                         (("calibration", "uncertain_threshold"), 0)])
def test_edge_values_that_make_sense_still_load(tiny_models, tmp_path, keys, value):
    path = copy_model(tiny_models["tiny-float32"], tmp_path)
    _set(path, *keys)(value)
    load_model(path)
