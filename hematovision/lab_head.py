"""The few-shot head: refit the dense head on a lab's cells' pooled features (numpy only; maths of ``adapt``).

Each cell gives f_v = GAP(feature map) for each of its 8 dihedral views (extra
samples: a cell has no "up"). With x = [f, 1] and Theta = [W; b] (D+1, C):

    L(Theta) = sum_i w_i CE(softmax(x_i Theta), y_i) + (lam / 2) |Theta - Theta_0|^2

Theta_0 is the shipped head, so classes the lab did not label (and directions the
few cells do not constrain) keep the source behaviour. w_i is class-balanced: each
labelled class carries total weight 1 / C_lab, split evenly over its cells' views.
lam = l2 * mean |x|^2 makes ``l2`` independent of the feature scale. How far a lab's
cells should pull the head from the source depends on how far its microscope is
from the training lab, so by default ``l2`` is chosen per lab: the value of
``L2_GRID`` with the best out-of-fold accuracy (then NLL) in the stratified
cross-validation below, the same folds for every value. L is smooth
and lam-strongly convex: Nesterov's accelerated gradient with step 1/L_max,
L_max = max|x|^2 / 2 + lam (softmax CE's Hessian is <= |x|^2 / 2 per sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import tta
from .lab_calibration import softmax

if TYPE_CHECKING:  # the annotation only: the head's maths need no classifier at import time
    from .classifier import Classifier

#: ``l2`` values the lab's own cross-validation chooses from (the default); ``--l2 VALUE`` fixes one instead.
L2_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
DEFAULT_L2 = None  # None: chosen from L2_GRID by cross-validation on the lab's cells


def fit_head(x: np.ndarray, y: np.ndarray, w: np.ndarray, theta0: np.ndarray, l2: float, iters: int = 300) -> np.ndarray:
    """Minimise the weighted, regularised cross-entropy of the module docstring; x already has the 1 column.

    The iterations run in float32 (half the time of float64 matmuls on these skinny products; the head is
    stored as float32 anyway); the constants (lam, step, momentum) are computed in float64.
    """
    onehot = np.eye(theta0.shape[1], dtype=np.float32)[y]
    sq = (x * x).sum(axis=1)
    lam = l2 * float(sq.mean())
    step = 1.0 / (0.5 * float(sq.max()) + lam)
    kappa = (0.5 * float(sq.max()) + lam) / lam
    beta = (np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)  # Nesterov momentum for a strongly convex objective
    x32, xt32, w32 = x.astype(np.float32), np.ascontiguousarray(x.T, np.float32), w.astype(np.float32)[:, None]
    anchor = theta0.astype(np.float32)
    theta = prev = anchor.copy()
    lam, step, beta = np.float32(lam), np.float32(step), np.float32(beta)
    for _ in range(iters):
        look = theta + beta * (theta - prev)
        # dL/dTheta = X^T diag(w) (softmax(X Theta) - Y) + lam (Theta - Theta_0)
        grad = xt32 @ (w32 * (softmax(x32 @ look) - onehot)) + lam * (look - anchor)
        prev, theta = theta, look - step * grad
    return theta.astype(np.float64)


def view_samples(feats: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells (N, V, D) -> view samples [f, 1], labels, class-balanced weights summing to 1."""
    n, v, _ = feats.shape
    x = np.concatenate([feats.reshape(n * v, -1), np.ones((n * v, 1))], axis=1)
    classes, counts = np.unique(y, return_counts=True)
    per_cell = {c: 1.0 / (len(classes) * k) for c, k in zip(classes, counts)}
    w = np.repeat([per_cell[c] / v for c in y], v)
    return x, np.repeat(y, v), w


def view_indices(spec_tta: str | None) -> list[int]:
    """Positions in ``tta.DIHEDRAL8`` of the model's test-time views (every view set is a subset of it)."""
    return [tta.DIHEDRAL8.index(v) for v in tta.views_of(spec_tta)]


def deploy_features(feats: np.ndarray, spec_tta: str | None) -> np.ndarray:
    """What the classifier pools at inference: the mean over the model's test-time views (view 0 without TTA)."""
    f = feats[:, view_indices(spec_tta)].mean(axis=1)
    return np.concatenate([f, np.ones((len(f), 1))], axis=1)


def stratified_folds(y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, int]:
    """Each cell's fold in a stratified k-fold (k = min(5, smallest class)), and k."""
    k = int(min(5, np.unique(y, return_counts=True)[1].min()))
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), int)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(len(idx)) % k
    return fold, k


def cross_validate(feats: np.ndarray, y: np.ndarray, theta0: np.ndarray, l2: float, spec_tta: str | None,
                   seed: int = 0) -> tuple[np.ndarray, int]:
    """Stratified k-fold over cells (:func:`stratified_folds`); returns out-of-fold adapted logits and k."""
    fold, k = stratified_folds(y, seed)
    oof = np.zeros((len(y), theta0.shape[1]))
    xd = deploy_features(feats, spec_tta)
    for j in range(k):
        train = fold != j
        theta = fit_head(*view_samples(feats[train], y[train]), theta0, l2)
        oof[~train] = xd[~train] @ theta
    return oof, k


@dataclass(frozen=True)
class HeadFit:
    """The adapted head and how it was chosen."""

    theta: np.ndarray  # (D + 1, C): [W; b] fitted on all the lab's cells with the chosen l2
    oof: np.ndarray  # (N, C) out-of-fold logits with the chosen l2 (calibration and the reported accuracy)
    folds: int
    l2: float
    oof_accuracy_by_l2: dict  # l2 -> out-of-fold accuracy: the selection, recorded in the JSON


def fit_lab_head(feats: np.ndarray, y: np.ndarray, theta0: np.ndarray, spec_tta: str | None, *,
                 l2: float | None = DEFAULT_L2, grid: tuple[float, ...] = L2_GRID) -> HeadFit:
    """The head ``adapt`` writes: ``l2`` as given, or the grid value with the best out-of-fold accuracy (then NLL)."""
    scored = {}
    for value in (grid if l2 is None else (l2,)):
        oof, k = cross_validate(feats, y, theta0, value, spec_tta)
        nll = -np.log(softmax(oof)[np.arange(len(y)), y] + 1e-12).mean()
        scored[value] = (float((oof.argmax(axis=1) == y).mean()), -float(nll), oof, k)
    chosen = max(scored, key=lambda v: scored[v][:2])
    _, _, oof, k = scored[chosen]
    theta = fit_head(*view_samples(feats, y), theta0, chosen)
    return HeadFit(theta, oof, k, float(chosen), {float(v): r[0] for v, r in scored.items()})


def source_theta(clf: Classifier) -> np.ndarray:
    """The shipped head as Theta_0 = [W; b] (D + 1, C), float64: where the lab's fit starts and what it is pulled towards."""
    return np.concatenate([clf.head_weights, clf.head_bias[None]], axis=0).astype(np.float64)
