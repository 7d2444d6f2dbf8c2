"""What a lab's own cells refit besides the head: calibration and the OOD reference (numpy only).

Temperature scaling (Guo et al. 2017): p = softmax(z / T) with T minimising the
NLL of out-of-fold logits, so the lab's confidences mean what they say on its
own microscope. The "uncertain" threshold is then the lowest confidence above
which out-of-fold predictions are >= 99.5 % correct. The OOD subspace (see
:mod:`hematovision.ood`) is extended by the lab features' residual directions so
that the lab's own cells are not rejected as foreign.
"""

from __future__ import annotations

import numpy as np

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


def refit_calibration(oof: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(temperature, uncertain threshold) refitted on a lab's out-of-fold logits, as the adapted JSON stores them."""
    t = fit_temperature(oof, y)
    return t, uncertain_threshold(softmax(oof / t), y)


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
