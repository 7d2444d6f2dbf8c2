"""The running differential count: cells per class and their percentages, like a manual 100-cell differential."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

#: Labels a reviewer may give a cell besides the model's classes; a verified differential does not count them
#: (``other`` comes with a free-text note saying what the cell is).
REVIEW_ONLY_LABELS = ("smudge", "artefact", "unidentified", "other")


@dataclass
class Differential:
    """Counts per label (every label of the model, in its order, zeros included) and uncertain cells.

    ``excluded``: cells seen but not counted (a reviewer's ``smudge``, ``artefact``, ``unidentified``, ``other``).
    """

    labels: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)
    uncertain: int = 0
    excluded: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.labels = tuple(self.labels)
        self.counts = {**{label: 0 for label in self.labels}, **self.counts}
        for label in self.counts:
            if label not in self.labels:
                self.labels += (label,)

    def add(self, label: str, *, uncertain: bool = False) -> None:
        if label not in self.counts:
            self.labels += (label,)
            self.counts[label] = 0
        self.counts[label] += 1
        self.uncertain += int(bool(uncertain))

    def exclude(self, label: str) -> None:
        """Note a cell that is seen but not counted (e.g. verified as a smudge)."""
        self.excluded[label] = self.excluded.get(label, 0) + 1

    def extend(self, other: "Differential") -> None:
        """Add another differential's counts to this one (e.g. several sessions)."""
        for label in other.labels:
            if label not in self.counts:
                self.labels += (label,)
                self.counts[label] = 0
            self.counts[label] += other.counts[label]
        self.uncertain += other.uncertain
        for label, n in other.excluded.items():
            self.excluded[label] = self.excluded.get(label, 0) + n

    @classmethod
    def from_rows(cls, labels: Iterable[str], rows: Iterable[tuple[str, bool]]) -> "Differential":
        diff = cls(tuple(labels))
        for label, uncertain in rows:
            diff.add(label, uncertain=bool(uncertain))
        return diff

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentages(self) -> dict[str, float]:
        n = self.total
        return {label: (100.0 * self.counts[label] / n if n else 0.0) for label in self.labels}

    def format(self, *, title: str | None = None) -> str:
        """A fixed-width table: label, count, percent; then the total and the uncertain cells."""
        pct = self.percentages()
        width = max([len(label) for label in self.labels] + [5])
        lines = [title or f"Differential: {self.total} cells"]
        lines += [f"  {label:<{width}} {self.counts[label]:>6} {pct[label]:6.1f} %" for label in self.labels]
        lines.append(f"  {'total':<{width}} {self.total:>6}  100.0 %" if self.total else f"  {'total':<{width}} {0:>6}")
        if self.excluded:
            lines.append("  not counted: " + ", ".join(f"{label} {n}" for label, n in sorted(self.excluded.items())))
        if self.uncertain:
            lines.append(f"  {self.uncertain} cell(s) flagged uncertain: review them (crops in the log)")
        return "\n".join(lines)
