"""Datasets: ``splits.csv`` + images -> decoded uint8 arrays -> shuffled tf.data pipelines.

Images are decoded once through the core's own loader and resize
(``hematovision.images`` / ``hematovision.preprocessing``), so training sees
pixels exactly as the classifier will.
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hematovision.images import load_image
from hematovision.preprocessing import resize, standardize_resized
from hematovision.spec import InputSpec

#: Class order per dataset (alphabetical folder names, as in splits.csv).
DATASETS = {
    "pbc": ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"),
    "all": ("benign", "early_pre_b", "pre_b", "pro_b"),
}
#: One-line descriptions shown beside a prediction (copied into the model JSON).
DESCRIPTIONS = {
    "basophil": "Basophil: granulocyte with large dark-purple granules that often hide a bilobed nucleus; normally <1 % of white cells.",
    "eosinophil": "Eosinophil: granulocyte with a usually bilobed nucleus and large orange-red granules; raised in allergy and parasitic infection.",
    "erythroblast": "Erythroblast (nucleated red cell): round dense nucleus, blue-grey to pink cytoplasm; not normally in adult peripheral blood.",
    "ig": "Immature granulocyte (promyelocyte, myelocyte, metamyelocyte): left shift; seen in infection, inflammation or marrow disease.",
    "lymphocyte": "Lymphocyte: small round cell with a dense round nucleus and a thin rim of pale-blue cytoplasm.",
    "monocyte": "Monocyte: large cell with a folded or kidney-shaped nucleus and grey-blue, often vacuolated cytoplasm.",
    "neutrophil": "Neutrophil: segmented nucleus (2-5 lobes) and fine pink-lilac granules; the most common white cell.",
    "platelet": "Platelet (thrombocyte): small anucleate fragment with purple granules; clumps can mimic cells.",
    "benign": "Benign: hematogones (normal B-cell precursors), not leukemic blasts.",
    "early_pre_b": "Early pre-B ALL: leukemic lymphoblasts of the early precursor-B stage.",
    "pre_b": "Pre-B ALL: leukemic lymphoblasts of the pre-B stage.",
    "pro_b": "Pro-B ALL: leukemic lymphoblasts of the pro-B stage.",
}
@dataclass(frozen=True)
class DatasetFacts:
    """What a model trained on a dataset needs to say about itself: written into config.json by training and
    into the model JSON by export (the app, CLI and station read it from there, never from here)."""

    labels: tuple[str, ...]
    model_name: str
    task: str
    display_name: str
    #: Red-cell diameter as a fraction of sqrt(H * W) of the dataset's images: the image scale that
    #: morphology and field cropping need (PBC: ~32 px at 160 px; ALL: ~16 px at 224 px, measured).
    red_cell_fraction: float
    #: Normal morphology reference file (in the models folder) the model's cells are compared against.
    morphology_reference: str = "wbc.morphology.json"

    def to_json(self) -> dict:
        return {"labels": list(self.labels), "model_name": self.model_name, "task": self.task,
                "display_name": self.display_name, "examples": self.model_name,
                "red_cell_fraction": self.red_cell_fraction, "morphology_reference": self.morphology_reference}


FACTS = {
    "pbc": DatasetFacts(DATASETS["pbc"], "wbc", "white-cell type (PBC, 8 classes)", "White-cell type (8 classes)", 0.2),
    "all": DatasetFacts(DATASETS["all"], "all", "B-lymphoblast ALL stage (4 classes)", "Leukemia stage, ALL (4 classes)",
                        16 / 224),
}


@dataclass(frozen=True)
class Split:
    paths: tuple[str, ...]
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int32


def read_splits(data_dir: str | Path) -> list[dict[str, str]]:
    path = Path(data_dir) / "splits.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; --data must point at a folder with splits.csv and images/.")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def load_split(data_dir: str | Path, split: str, size: int, labels: tuple[str, ...], *, limit: int | None = None) -> Split:
    """Decode every image of ``split`` to ``size`` x ``size`` (``limit`` per class for smoke tests)."""
    rows = [r for r in read_splits(data_dir) if r["split"] == split]
    if limit is not None:
        rows = _first_per_class(rows, limit)
    root = Path(data_dir)
    return _decoded_split([root / r["path"] for r in rows], [r["path"] for r in rows], [r["label"] for r in rows], size,
                          labels, unknown="labels {unknown} in splits.csv are not among {labels}")


def load_labelled_folder(folder: str | Path, size: int, labels: tuple[str, ...]) -> Split:
    """Decode every cell of a ``<label>/<image>`` folder (another lab's labelled cells) to ``size`` x ``size``."""
    from .crosslab import labelled_cells

    cells = labelled_cells(folder)
    return _decoded_split([p for p, _ in cells], [str(p) for p, _ in cells], [lab for _, lab in cells], size, labels,
                          unknown=f"{folder}: label folders {{unknown}} are not among {{labels}}")


def _decoded_split(files: list[Path], recorded: list[str], names: list[str], size: int, labels: tuple[str, ...], *,
                   unknown: str) -> Split:
    """Check every name is a class (else ValueError with ``unknown`` formatted), then decode ``files`` in threads."""
    index = {name: i for i, name in enumerate(labels)}
    missing = sorted(set(names) - set(index))
    if missing:
        raise ValueError(unknown.format(unknown=missing, labels=labels))
    with ThreadPoolExecutor(max_workers=4) as pool:
        images = list(pool.map(lambda path: resize(load_image(path), size, size), files))
    return Split(
        paths=tuple(recorded),
        images=np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
        labels=np.array([index[name] for name in names], dtype=np.int32),
    )


def _first_per_class(rows: list[dict[str, str]], limit: int) -> list[dict[str, str]]:
    seen: dict[str, int] = {}
    kept = []
    for row in rows:
        seen[row["label"]] = seen.get(row["label"], 0) + 1
        if seen[row["label"]] <= limit:
            kept.append(row)
    return kept


def class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Inverse-frequency weights, normalised so the mean weight over samples is 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1))
    return {i: float(w) for i, w in enumerate(weights)}


def standardized(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Resized uint8 images -> what the network sees before scaling (stain-normalized if the spec says so)."""
    if spec.stain is None:
        return images
    return np.stack([standardize_resized(im, spec) for im in images]) if len(images) else images


def make_dataset(split: Split, spec: InputSpec, *, batch_size: int, training: bool, augment=None, seed: int = 0):
    """tf.data over in-memory uint8 arrays -> normalised float batches.

    Training reshuffles the whole split every epoch and applies ``augment`` (a
    function on float [0, 1] batches) after the stain normalization of the
    model's ``InputSpec`` (if any); normalisation uses the same constants the
    classifier reads from the JSON.
    """
    import tensorflow as tf

    def to_input(x, y):
        x = tf.cast(x, tf.float32) / 255.0
        if augment is not None:
            x = augment(x)
        if spec.color_order == "BGR":
            x = x[..., ::-1]
        return x * (255.0 * spec.scale) + spec.offset, y

    ds = tf.data.Dataset.from_tensor_slices((standardized(split.images, spec), split.labels))
    if training:
        # Buffer = the whole split: splits.csv is grouped by class.
        ds = ds.shuffle(len(split.labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False)
    if not training:
        augment = None
    ds = ds.map(to_input, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
