"""Is this batch of cells from a microscope the model knows? A batch-level out-of-distribution test.

One cell flagged out of distribution says little; many cells of one batch (one
smear, one microscope) flagged far more often than the training lab's own cells
are says the whole set-up differs, and then the cells the model is sure of are
not to be trusted either (on another lab's CellaVision exports the shipped
``wbc`` is confidently wrong on about one cell in five, while flagging a fifth
of them as out of distribution).

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


@dataclass(frozen=True)
class BatchShift:
    """The verdict on one batch: counts, the binomial p-value, and whether the set-up looks unlike the training lab's."""

    cells: int
    out_of_distribution: int
    p_value: float
    shifted: bool
    judged: bool
    expected_rate: float = EXPECTED_OOD_RATE

    def message(self) -> str:
        """One sentence for a report or a page; empty when there is nothing to say."""
        if not self.shifted:
            return ""
        return (f"This batch looks unlike the training lab's cells: {self.out_of_distribution} of {self.cells} cells "
                f"are out of distribution (expected at most {100 * self.expected_rate:.0f} %). On a microscope, stain "
                "or camera the model was not trained on, even its confident answers are often wrong: treat every "
                "answer as unverified, and adapt the model to this set-up with a few labelled cells "
                "(python -m hematovision adapt).")

    def to_json(self) -> dict:
        return {"cells": self.cells, "out_of_distribution": self.out_of_distribution, "p_value": self.p_value,
                "shifted": self.shifted, "judged": self.judged, "expected_rate": self.expected_rate}


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


def check_batch(out_of_distribution: Iterable[bool | None], *, expected_rate: float = EXPECTED_OOD_RATE,
                alpha: float = ALPHA, min_cells: int = MIN_CELLS) -> BatchShift:
    """Judge a batch from its cells' out-of-distribution flags (``Prediction.out_of_distribution``).

    ``None`` flags (a model without an OOD reference) are not counted; with none counted the batch is not judged.

    Raises:
        ValueError: ``expected_rate`` or ``alpha`` outside (0, 1), or ``min_cells`` below 1.
    """
    if not 0.0 < expected_rate < 1.0 or not 0.0 < alpha < 1.0:
        raise ValueError(f"expected_rate and alpha must be in (0, 1), not {expected_rate} and {alpha}")
    if min_cells < 1:
        raise ValueError(f"min_cells must be at least 1, not {min_cells}")
    flags = [bool(f) for f in out_of_distribution if f is not None]
    n, x = len(flags), sum(flags)
    p_value = binomial_upper_tail(x, n, expected_rate)
    judged = n >= min_cells
    return BatchShift(cells=n, out_of_distribution=x, p_value=p_value, shifted=judged and p_value < alpha,
                      judged=judged, expected_rate=expected_rate)
