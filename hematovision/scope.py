"""A lab's differential scope: the classes the lab counts, and what happens to a cell outside them.

Many labs count a five-part differential (neutrophil, lymphocyte, monocyte,
eosinophil, basophil) and refer anything else (immature granulocytes, nucleated
red cells, blasts) to a specialist, as a haematology analyser's "suspect" flags
do. A model JSON may carry ``"scope": {"classes": [...]}`` (written by
``python -m hematovision scope``); every consumer (``classify``, the station, the
app) then reads it through the model, as it reads the labels.

The rule, with p the model's calibrated probabilities over all its classes and
S the scope:

    label      = argmax_{c in S} p_c            (the best class the lab counts)
    confidence = p_label                        (NOT renormalised over S)
    outside    = argmax_c p_c  if it is not in S, else None
    uncertain  = source rule (p_label < threshold, out of distribution) or outside

The probabilities are left as the model gives them (no renormalisation over S),
so a cell the model thinks is probably an immature granulocyte shows that
probability, and its in-scope label's confidence stays low. Since p_label equals
the top probability whenever the top class is in S, the scoped model flags every
cell the unscoped model flags, plus the cells whose first choice lies outside S:
a scope can only add flags, never remove one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import HematoVisionError


class ScopeError(HematoVisionError, ValueError):
    """A differential scope that names a class the model does not have, or fewer than two classes."""


@dataclass(frozen=True)
class DifferentialScope:
    """The classes a lab counts (a subset of the model's labels, in the model's order)."""

    classes: tuple[str, ...]

    @classmethod
    def of(cls, classes: Sequence[str], labels: Sequence[str]) -> "DifferentialScope":
        """Check ``classes`` against the model's ``labels``: at least two, all known, none twice."""
        classes = [str(c) for c in classes]
        unknown = [c for c in classes if c not in labels]
        if unknown:
            raise ScopeError(f"scope class(es) {', '.join(map(repr, unknown))} are not classes of this model; "
                             f"choose among {', '.join(labels)}.")
        if len(set(classes)) != len(classes):
            raise ScopeError(f"scope names a class twice ({', '.join(classes)}); list each class once.")
        if len(classes) < 2:
            raise ScopeError(f"a scope needs at least two classes, not {len(classes)}; without one, use the source model.")
        return cls(classes=tuple(c for c in labels if c in classes))

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None, labels: Sequence[str]) -> "DifferentialScope | None":
        """The model JSON's ``scope`` entry (None when absent)."""
        if data is None:
            return None
        if not isinstance(data, Mapping) or not isinstance(data.get("classes"), list):
            raise ScopeError("scope must be an object with a list of class names under 'classes'.")
        return cls.of(data["classes"], labels)

    def left_out(self, labels: Sequence[str]) -> list[str]:
        """The model's classes the lab does not count (a first choice among them is flagged), in the model's order."""
        return [lb for lb in labels if lb not in self.classes]

    def inside(self, labels: Sequence[str]) -> np.ndarray:
        """Boolean mask over ``labels``: True for the classes in scope."""
        return np.array([lb in self.classes for lb in labels])

    def choose(self, probabilities: np.ndarray, labels: Sequence[str]) -> tuple[int, str | None]:
        """(index of the best in-scope class, the first choice's name when it lies outside the scope, else None)."""
        inside = self.inside(labels)
        top = int(np.argmax(probabilities))
        best = int(np.flatnonzero(inside)[np.argmax(probabilities[inside])])
        return best, (None if inside[top] else str(labels[top]))

    def choose_rows(self, scores: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`choose` for a (cells, classes) array of probabilities or logits (argmax is the same for both):
        (the best in-scope class per row, True where the row's first choice is outside the scope)."""
        inside = self.inside(labels)
        best = np.where(inside, scores, -np.inf).argmax(axis=1)
        return best, ~inside[scores.argmax(axis=1)]
