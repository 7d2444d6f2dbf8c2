"""Is this batch of cells from a microscope the model knows? A batch-level out-of-distribution test.

One cell flagged out of distribution says little; many cells of one batch (one
smear, one microscope) flagged far more often than the training lab's own cells
say that the whole set-up differs, or that the smear is full of cells of a type
the model does not know (blasts: then the warning is needed just as much). Either
way the cells the model is sure of are not to be trusted either: on another
lab's CellaVision exports the shipped ``wbc`` is confidently wrong on about one
cell in five, while flagging a fifth of them as out of distribution.

The test: of ``n`` cells, ``x`` are out of distribution. On the training lab's
own cells the per-cell rate is at most ``expected_rate`` (the OOD threshold is
the 99.9th percentile of val scores; measured 0.1-0.3 % on val and test, so the
default 1 % is conservative). Under that rate ``X ~ Binomial(n, p0)``, and the
one-sided p-value is the upper tail

    P(X >= x) = sum_{j = x}^{n} C(n, j) p0^j (1 - p0)^(n - j),

summed in log space (``lgamma``) so that it stays exact for thousands of cells.
The batch is *shifted* when ``P(X >= x) < alpha``: with ``alpha = 0.001`` at most
one batch in a thousand from the training lab's own microscope is called
shifted. Batches of fewer than ``min_cells`` cells are not judged.

A second, more sensitive count uses the OOD *score* rather than the flag. A cell
is *atypical* when its score is above the ``ATYPICAL_PERCENTILE``-th percentile
of the training lab's val scores (``ood.atypical_threshold`` in the model JSON,
written by ``export.ood``), so about 5 % of the lab's own cells are atypical; the
same binomial tail tests ``y`` atypical cells of ``n`` against twice that rate,
``EXPECTED_ATYPICAL_RATE = 10 %`` (margin for a smear or a day that differs a
little). A shifted set-up moves most cells' scores up without pushing many past
the strict 99.9th-percentile flag: on another lab's CellaVision exports 88 % of
the cells were atypical but only 21 % flagged. With both counts the batch is
shifted when the smaller p-value is below ``alpha / 2`` (Bonferroni), so the
false-alarm bound stays ``alpha``. Cells without a verdict (``None``: a model
without the threshold, or a station cell logged before schema 3) are left out
of that count; a count with fewer than ``min_cells`` cells is not used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

#: Highest per-cell out-of-distribution rate expected on the training lab's own cells (measured 0.1-0.3 %).
EXPECTED_OOD_RATE = 0.01
#: Highest chance of calling a batch from the training lab's own microscope shifted.
ALPHA = 0.001
#: Fewer cells than this are not judged (one or two odd cells say nothing about a microscope).
MIN_CELLS = 5
#: A cell is atypical above this percentile of the training lab's val OOD scores (export.ood stores the score).
ATYPICAL_PERCENTILE = 95.0
#: Rate of atypical cells tested against: twice the 5 % of val cells above that percentile.
EXPECTED_ATYPICAL_RATE = round(2 * (1 - ATYPICAL_PERCENTILE / 100), 6)


@dataclass(frozen=True)
class BatchShift:
    """The verdict on one batch: counts, the binomial p-value, and whether the set-up looks unlike the training lab's."""

    cells: int
    out_of_distribution: int
    p_value: float  # the batch's p-value: min over the counts used, Bonferroni-corrected when there are two
    shifted: bool
    judged: bool
    expected_rate: float = EXPECTED_OOD_RATE
    atypical: int | None = None  # atypical cells among ``atypical_cells``; None when that count was not used
    atypical_cells: int = 0
    expected_atypical_rate: float = EXPECTED_ATYPICAL_RATE

    def message(self) -> str:
        """One sentence for a report or a page; empty when there is nothing to say."""
        if not self.shifted:
            return ""
        counts = f"{self.out_of_distribution} of {self.cells} cells are out of distribution (expected at most " \
                 f"{100 * self.expected_rate:.0f} %)"
        if self.atypical is not None:
            counts += (f" and {self.atypical} of {self.atypical_cells} are atypical (expected at most "
                       f"{100 * self.expected_atypical_rate:.0f} %)")
        return (f"This batch looks unlike the training lab's cells: {counts}. Either the set-up differs "
                "(microscope, stain or camera) or the smear holds many cells of a type the model was not trained on "
                "(for the white-cell model, blasts): have a specialist look at it. Here even the model's confident answers are often wrong: "
                "treat every answer as unverified. If the set-up is new, adapt the model to it with a few labelled "
                "cells (python -m hematovision adapt; if it is adapted already, with more of them).")

    def to_json(self) -> dict:
        return {"cells": self.cells, "out_of_distribution": self.out_of_distribution, "p_value": self.p_value,
                "shifted": self.shifted, "judged": self.judged, "expected_rate": self.expected_rate,
                "atypical": self.atypical, "atypical_cells": self.atypical_cells,
                "expected_atypical_rate": self.expected_atypical_rate}


def binomial_upper_tail(x: int, n: int, p: float) -> float:
    """P(X >= x) for X ~ Binomial(n, p), exact (log-space terms)."""
    if x <= 0:
        return 1.0
    if x > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    logs = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * log_p + (n - j) * log_q
            for j in range(x, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def check_batch(out_of_distribution: Iterable[bool | None], *, atypical: Iterable[bool | None] = (),
                expected_rate: float = EXPECTED_OOD_RATE, expected_atypical_rate: float = EXPECTED_ATYPICAL_RATE,
                alpha: float = ALPHA, min_cells: int = MIN_CELLS) -> BatchShift:
    """Judge a batch from its cells' out-of-distribution flags and, where given, their atypical flags.

    ``out_of_distribution`` and ``atypical`` are ``Prediction.out_of_distribution`` and ``Prediction.atypical``
    of the batch's cells. ``None`` entries (no verdict) are not counted; a count with fewer than ``min_cells``
    cells is not used, and with neither used the batch is not judged.

    Raises:
        ValueError: ``expected_rate``, ``expected_atypical_rate`` or ``alpha`` outside (0, 1), or ``min_cells`` below 1.
    """
    for name, value in (("expected_rate", expected_rate), ("expected_atypical_rate", expected_atypical_rate), ("alpha", alpha)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1), not {value}")
    if min_cells < 1:
        raise ValueError(f"min_cells must be at least 1, not {min_cells}")
    flags = [bool(f) for f in out_of_distribution if f is not None]
    marks = [bool(f) for f in atypical if f is not None]
    n, x = len(flags), sum(flags)
    p_values = [binomial_upper_tail(x, n, expected_rate)] if n >= min_cells else []
    if len(marks) >= min_cells:
        p_values.append(binomial_upper_tail(sum(marks), len(marks), expected_atypical_rate))
    judged = bool(p_values)
    # Bonferroni over the counts used: P(any false alarm) <= sum of the per-count alphas = alpha.
    p_value = min(1.0, len(p_values) * min(p_values)) if judged else binomial_upper_tail(x, n, expected_rate)
    return BatchShift(cells=n, out_of_distribution=x, p_value=p_value, shifted=judged and p_value < alpha,
                      judged=judged, expected_rate=expected_rate,
                      atypical=sum(marks) if len(marks) >= min_cells else None, atypical_cells=len(marks),
                      expected_atypical_rate=expected_atypical_rate)
