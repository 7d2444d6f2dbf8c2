"""export.views: the fewest test-time views that keep 8-view val accuracy (test reported, never used)."""

import pytest

from export.views import choose


def _scores(val, test=None):
    views = {"none": 1, "flips2": 2, "dihedral8": 8}
    return {n: {"views": views[n], "accuracy": {"val": v, "test": (test or val)[n]}} for n, v in val.items()}


@pytest.mark.parametrize("val, tolerance, chosen", [
    ({"none": 0.9838, "flips2": 0.9879, "dihedral8": 0.9872}, 0.001, "flips2"),    # wbc as measured: 2 views win
    ({"none": 0.9969, "flips2": 0.9969, "dihedral8": 0.9969}, 0.001, "none"),      # all as measured: 1 view ties
    ({"none": 0.9800, "flips2": 0.9850, "dihedral8": 0.9880}, 0.001, "dihedral8"),  # both lose > 0.1 points
    ({"none": 0.9800, "flips2": 0.9850, "dihedral8": 0.9880}, 0.005, "flips2"),
    ({"none": 0.9871, "flips2": 0.9871, "dihedral8": 0.9880}, 0.001, "none"),       # exactly at the tolerance
])
def test_fewest_views_within_tolerance_on_val(val, tolerance, chosen):
    assert choose(_scores(val), tolerance) == chosen


def test_test_accuracy_never_decides():
    val = {"none": 0.98, "flips2": 0.99, "dihedral8": 0.99}
    assert choose(_scores(val, {"none": 1.0, "flips2": 0.5, "dihedral8": 0.5})) == "flips2"
