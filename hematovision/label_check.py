"""Which of a lab's labelled cells should a specialist look at again? (numpy only)

Before a lab's cells adapt the model, their labels are checked against the
cells themselves. Each cell is predicted by a head that never saw it (the
out-of-fold logits of ``adapt``'s cross-validation, so the cell's own label
cannot vouch for itself). A cell is listed when that prediction names another
class, ordered by how little probability the out-of-fold head gives the label
the lab wrote, p(label) = softmax(z / T)[label], lowest first (the "self
confidence" ranking of confident learning, Northcutt et al. 2021, JAIR 70).

A listed cell is either mislabelled or a cell the model cannot yet tell apart
on this microscope; only a specialist can say which, so nothing is relabelled
or dropped automatically. The list is written into the adapted model's JSON and
printed by ``python -m hematovision adapt``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .lab_calibration import softmax

RULE = ("out-of-fold prediction (a head fitted without the cell) names another class; ordered by the out-of-fold "
        "probability of the given label, lowest first")


@dataclass(frozen=True)
class LabelDisagreement:
    """One labelled cell whose out-of-fold prediction is another class."""

    file: str
    label: str
    predicted: str
    p_label: float  # out-of-fold probability of the label the lab gave
    p_predicted: float  # out-of-fold probability of the predicted class

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def label_disagreements(oof_logits: np.ndarray, y: np.ndarray, paths: list[str | Path], labels: tuple[str, ...], *,
                        temperature: float = 1.0) -> list[LabelDisagreement]:
    """Cells whose out-of-fold prediction differs from their label, least supported label first."""
    oof = np.asarray(oof_logits, np.float64)
    y = np.asarray(y)
    if oof.ndim != 2 or len(oof) != len(y) or len(y) != len(paths):
        raise ValueError(f"need one logit row and one path per cell: logits {oof.shape}, labels {y.shape}, paths {len(paths)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, not {temperature}")
    p = softmax(oof / temperature)
    pred = p.argmax(axis=1)
    rows = [LabelDisagreement(str(paths[i]), labels[y[i]], labels[pred[i]], float(p[i, y[i]]), float(p[i, pred[i]]))
            for i in np.flatnonzero(pred != y)]
    return sorted(rows, key=lambda r: (r.p_label, r.file))


def summary(rows: list[LabelDisagreement], n_cells: int, *, show: int = 10) -> str:
    """A few lines for the command's log: how many cells to check, and the first ``show`` of them."""
    if not rows:
        return f"label check: every one of the {n_cells} cells agrees with its label under cross-validation"
    head = (f"label check: {len(rows)} of {n_cells} cells disagree with their label under cross-validation; "
            "a specialist should look at them again (mislabelled, or not yet separable on this microscope):")
    lines = [f"  {r.file}: labelled {r.label}, predicted {r.predicted} (p(label) {r.p_label:.2f})" for r in rows[:show]]
    more = [f"  ... and {len(rows) - show} more (all in the JSON's adaptation.label_check)"] if len(rows) > show else []
    return "\n".join([head, *lines, *more])
