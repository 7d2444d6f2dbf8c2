"""Classification metrics, calibration (temperature scaling, ECE) and the uncertain threshold.

numpy only, so the same code scores a Keras run and a shipped .tflite.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """ECE: sum over confidence bins of |accuracy - mean confidence| weighted by bin size."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def classification_report(y_true: np.ndarray, probs: np.ndarray, labels: tuple[str, ...] | list[str]) -> dict:
    n = len(labels)
    y_pred = probs.argmax(axis=1)
    cm = confusion(y_true, y_pred, n)
    tp = np.diag(cm).astype(np.float64)
    precision = np.divide(tp, cm.sum(axis=0), out=np.zeros(n), where=cm.sum(axis=0) > 0)
    recall = np.divide(tp, cm.sum(axis=1), out=np.zeros(n), where=cm.sum(axis=1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()),
        "macro_f1": float(f1.mean()),
        "ece": expected_calibration_error(probs, y_true),
        "nll": float(-np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, 1.0)))),
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(cm[i].sum())}
            for i, label in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
    }


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """Temperature T minimising the validation NLL of softmax(logits / T).

    NLL is unimodal in log T, so a golden-section search on [log 0.05, log 20] suffices.
    """
    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(p[np.arange(len(y_true)), y_true], 1e-12, 1.0))))

    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    for _ in range(60):
        if nll(a) < nll(b):
            hi, b = b, a
            a = hi - g * (hi - lo)
        else:
            lo, a = a, b
            b = lo + g * (hi - lo)
    return float(np.exp((lo + hi) / 2))


def choose_uncertain_threshold(probs: np.ndarray, y_true: np.ndarray, *, target_accuracy: float = 0.995, floor: float = 0.5) -> float:
    """Smallest confidence t such that predictions with confidence >= t are at least
    ``target_accuracy`` correct on validation; below t the app says "uncertain"."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    order = np.argsort(-conf)
    running = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    ok = np.nonzero(running >= target_accuracy)[0]
    if len(ok) == 0:
        return 1.0
    # The largest prefix (lowest confidence) that still meets the target.
    t = float(conf[order][ok[-1]])
    return max(floor, t)


def coverage(probs: np.ndarray, y_true: np.ndarray, threshold: float) -> dict:
    conf = probs.max(axis=1)
    keep = conf >= threshold
    correct = probs.argmax(axis=1) == y_true
    return {
        "threshold": threshold,
        "flagged_uncertain": float(1 - keep.mean()),
        "accuracy_when_confident": float(correct[keep].mean()) if keep.any() else None,
        "accuracy_when_uncertain": float(correct[~keep].mean()) if (~keep).any() else None,
    }


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % for z = 1.96).

    centre = (p + z^2/2n) / (1 + z^2/n), half-width = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n);
    unlike p +- z sqrt(p(1-p)/n) it stays inside [0, 1] and is honest at p = 0 or 1 with small n.
    """
    if n == 0:
        return float("nan"), float("nan")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))
