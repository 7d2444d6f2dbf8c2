"""The fine-tuning probe's pure parts (training/finetune_probe.py); the TF run itself is a measurement, in README."""

import numpy as np
import pytest

from training.finetune_probe import dihedral8, draw, scaled


def test_dihedral8_gives_the_eight_distinct_symmetries():
    x = np.arange(2 * 3 * 3 * 1).reshape(2, 3, 3, 1)
    views = dihedral8(x)
    assert len(views) == 8 and len({v.tobytes() for v in views}) == 8
    assert all(sorted(v[0].ravel()) == sorted(x[0].ravel()) for v in views)  # same pixels, moved
    assert np.array_equal(views[0], x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_draw_takes_k_cells_per_class_reproducibly(seed):
    y = np.array([0] * 5 + [1] * 7 + [2] * 4)
    train = draw(y, 3, seed)
    assert [int(train[y == c].sum()) for c in range(3)] == [3, 3, 3]
    assert np.array_equal(train, draw(y, 3, seed))


def test_scaled_is_the_models_normalisation():
    assert scaled(np.array([0, 255], np.uint8)).tolist() == pytest.approx([-1.0, 1.0])
