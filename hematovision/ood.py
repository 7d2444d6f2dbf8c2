"""Out-of-distribution score: how unlike the training cells an image's features are.

The pooled feature vector f (GAP of the last feature map, what the dense head
sees) is compared with the principal subspace of the training features: with
m their mean and P the top-k principal directions (D x k, orthonormal),

    r = (f - m) - P P^T (f - m),        s(f) = |r|^2 / |f - m|^2,

the share of f's energy that lies outside everything the training cells span
(0 = fully explained, 1 = nothing in common). Photos, blank frames, text and
fluorescence put most of their energy elsewhere. The threshold is a high
percentile of validation cells' scores, so few real cells are rejected.
Measured choice: a class-conditional diagonal Mahalanobis distance rejected
only ~42 % of the generated non-blood images at the same false-rejection rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, eq=False)
class OODModel:
    mean: np.ndarray  # (D,)
    components: np.ndarray  # (D, k), orthonormal columns
    threshold: float

    @classmethod
    def fit(cls, features: np.ndarray, *, k: int = 128) -> "OODModel":
        f = features.astype(np.float64)
        mean = f.mean(axis=0)
        _, _, vt = np.linalg.svd(f - mean, full_matrices=False)  # PCA by SVD of the centred features
        return cls(mean.astype(np.float32), vt[:k].T.astype(np.float32), threshold=float("inf"))

    def with_threshold(self, threshold: float) -> "OODModel":
        return OODModel(self.mean, self.components, float(threshold))

    def score(self, features: np.ndarray) -> np.ndarray:
        """Relative residual for pooled features of shape (D,) or (N, D)."""
        f = np.atleast_2d(features).astype(np.float32) - self.mean
        r = f - (f @ self.components) @ self.components.T
        s = (r * r).sum(axis=1) / np.maximum((f * f).sum(axis=1), 1e-12)
        return s if np.ndim(features) == 2 else s[0]

    def save(self, path: str | Path) -> None:
        np.savez(path, mean=self.mean, components=self.components, threshold=np.float64(self.threshold))

    @classmethod
    def load(cls, path: str | Path) -> "OODModel":
        with np.load(path) as d:
            return cls(d["mean"].astype(np.float32), d["components"].astype(np.float32), float(d["threshold"]))


def pooled(feature_map: np.ndarray) -> np.ndarray:
    """Global average pooling of an (h, w, D) feature map: what the dense head sees."""
    return feature_map.reshape(-1, feature_map.shape[-1]).mean(axis=0)
