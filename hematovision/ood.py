"""Out-of-distribution score: how unlike the training cells an image's features are.

The pooled feature vector f (GAP of the last feature map, D values) is
projected on the top-k principal components of the training features:
z = P^T (f - m). With class means mu_c and the pooled within-class variance
v_j per component, the score is

    s(f) = sqrt( (min_c sum_j (z_j - mu_cj)^2 / v_j  +  |r|^2 / v_r) / (k + 1) ),

a diagonal Mahalanobis distance to the nearest class plus the residual r of f
outside the subspace (per-dimension variance v_r). The threshold is a high
percentile of the scores of validation cells, so few real cells are rejected;
photos, blank frames, text and fluorescence land far away.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, eq=False)
class OODModel:
    mean: np.ndarray  # (D,)
    components: np.ndarray  # (D, k)
    class_means: np.ndarray  # (C, k)
    variances: np.ndarray  # (k,)
    residual_variance: float
    threshold: float

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, *, k: int = 48) -> "OODModel":
        f = features.astype(np.float64)
        mean = f.mean(axis=0)
        # PCA by SVD of the centred features.
        _, _, vt = np.linalg.svd(f - mean, full_matrices=False)
        comps = vt[:k].T
        z = (f - mean) @ comps
        classes = np.unique(labels)
        class_means = np.stack([z[labels == c].mean(axis=0) for c in classes])
        within = z - class_means[np.searchsorted(classes, labels)]
        variances = within.var(axis=0) + 1e-6
        resid = (f - mean) - z @ comps.T
        residual_variance = float((resid ** 2).sum(axis=1).mean()) + 1e-6
        return cls(mean.astype(np.float32), comps.astype(np.float32), class_means.astype(np.float32),
                   variances.astype(np.float32), residual_variance, threshold=float("inf"))

    def with_threshold(self, threshold: float) -> "OODModel":
        return OODModel(self.mean, self.components, self.class_means, self.variances, self.residual_variance, float(threshold))

    def score(self, features: np.ndarray) -> np.ndarray:
        """Scores for pooled features of shape (D,) or (N, D)."""
        f = np.atleast_2d(features).astype(np.float32) - self.mean
        z = f @ self.components
        d2 = (((z[:, None, :] - self.class_means[None]) ** 2) / self.variances).sum(axis=2).min(axis=1)
        r2 = ((f - z @ self.components.T) ** 2).sum(axis=1) / self.residual_variance
        s = np.sqrt((d2 + r2) / (self.components.shape[1] + 1))
        return s if np.ndim(features) == 2 else s[0]

    def save(self, path: str | Path) -> None:
        np.savez(path, mean=self.mean, components=self.components, class_means=self.class_means, variances=self.variances,
                 residual_variance=np.float64(self.residual_variance), threshold=np.float64(self.threshold))

    @classmethod
    def load(cls, path: str | Path) -> "OODModel":
        with np.load(path) as d:
            return cls(d["mean"], d["components"], d["class_means"], d["variances"], float(d["residual_variance"]), float(d["threshold"]))


def pooled(feature_map: np.ndarray) -> np.ndarray:
    """Global average pooling of an (h, w, D) feature map: what the dense head sees."""
    return feature_map.reshape(-1, feature_map.shape[-1]).mean(axis=0)
