"""What a lab's own cells refit besides the head: calibration and the OOD reference (numpy only).

Temperature scaling (Guo et al. 2017): p = softmax(z / T) with T minimising the
NLL of out-of-fold logits, so the lab's confidences mean what they say on its
own microscope. The "uncertain" threshold is then the lowest confidence above
which out-of-fold predictions are >= 99.5 % correct. The OOD subspace (see
:mod:`hematovision.ood`) is extended by the lab features' residual directions so
that the lab's own cells are not rejected as foreign, and the atypical threshold
of the batch-level set-up check (:mod:`hematovision.batch_shift`) is refitted so
that the lab's own set-up is no longer called unfamiliar
(:func:`refit_atypical_threshold`, from out-of-fold scores).
"""

from __future__ import annotations

import numpy as np

from .batch_shift import ATYPICAL_PERCENTILE, check_batch
from .ood import OODModel


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))  # shift for numerical stability
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """T minimising the NLL of softmax(z / T), by a log-spaced grid search."""
    grid = np.geomspace(0.05, 20.0, 400)
    nll = [-np.log(softmax(logits / t)[np.arange(len(y)), y] + 1e-12).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


def uncertain_threshold(p: np.ndarray, y: np.ndarray, target: float = 0.995, floor: float = 0.5) -> float:
    """Lowest confidence t at which predictions with confidence >= t are >= target correct (floor 0.5; 1.0 if none)."""
    conf, correct = p.max(axis=1), p.argmax(axis=1) == y
    for t in np.sort(conf):
        if correct[conf >= t].mean() >= target:
            return float(max(t, floor))
    return 1.0  # never reached target: everything is uncertain


def refit_calibration(oof: np.ndarray, y: np.ndarray, *, counted: np.ndarray | None = None) -> tuple[float, float]:
    """(temperature, uncertain threshold) refitted on a lab's out-of-fold logits, as the adapted JSON stores them.

    ``counted``: for a model with a lab scope (:mod:`hematovision.scope`), the boolean mask of the classes it counts.
    A cell whose first choice is outside them is flagged whatever its confidence, so the threshold is fitted on the
    other cells only, whose label is their first choice (as the scoped model will answer); the temperature on all.
    """
    t = fit_temperature(oof, y)
    p = softmax(oof / t)
    if counted is not None:
        keep = np.asarray(counted, bool)[p.argmax(axis=1)]
        p, y = p[keep], y[keep]
    return t, uncertain_threshold(p, y)


def extend_ood(ood: OODModel, feats: np.ndarray, energy: float = 0.9, max_new: int = 16) -> tuple[OODModel, int]:
    """Add the top principal directions of the lab features' residual outside the source subspace."""
    f = feats.reshape(-1, feats.shape[-1]).astype(np.float32) - ood.mean
    r = f - (f @ ood.components) @ ood.components.T  # part the source subspace does not explain
    _, s, vt = np.linalg.svd(r, full_matrices=False)
    share = np.cumsum(s ** 2) / max(float((s ** 2).sum()), 1e-12)
    n_new = int(min(max_new, np.searchsorted(share, energy) + 1, len(feats) - 1))
    if n_new < 1:
        return ood, 0
    q, _ = np.linalg.qr(np.concatenate([ood.components, vt[:n_new].T], axis=1))  # re-orthonormalise
    return OODModel(ood.mean, q.astype(np.float32), ood.threshold), n_new


def out_of_fold_ood_scores(ood: OODModel, feats: np.ndarray, pooled: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Each cell's OOD score against the reference extended with the *other* folds' cells, as ``adapt`` extends it
    with all of them (in-sample scores would be optimistic). ``feats`` (N, V, D) per-view features, ``pooled`` (N, D)
    what the classifier scores, ``fold`` each cell's cross-validation fold."""
    scores = np.empty(len(pooled))
    for j in np.unique(fold):
        extended, _ = extend_ood(ood, feats[fold != j])
        scores[fold == j] = extended.score(pooled[fold == j].astype(np.float32))
    return scores


def refit_atypical_threshold(source_threshold: float, lab_scores: np.ndarray, percentile: float = ATYPICAL_PERCENTILE) -> float:
    """The adapted model's atypical threshold: max(source threshold, the percentile of the lab's out-of-fold scores).

    The source threshold makes about 5 % of the training lab's cells atypical; the lab's percentile makes about 5 %
    of the lab's own cells atypical, so a later batch from this set-up is no longer called unfamiliar, while a batch
    unlike both (another microscope again, or a smear full of blasts) still is. The max keeps the training lab's
    cells typical."""
    return max(float(source_threshold), float(np.percentile(lab_scores, percentile)))


def batch_verdict(scores: np.ndarray, threshold: float, atypical_threshold: float | None) -> dict:
    """The batch set-up check on cells with these OOD scores, as one batch."""
    ood = scores > threshold
    atypical = None if atypical_threshold is None else scores > atypical_threshold
    shift = check_batch(ood.tolist(), atypical=() if atypical is None else atypical.tolist())
    return {"out_of_distribution_share": float(ood.mean()), "atypical_share": None if atypical is None else float(atypical.mean()),
            "batch_called_shifted": shift.shifted, "p_value": shift.p_value}
