"""Dihedral test-time augmentation: the 8 symmetries of the square.

A cell on a slide has no "up", so the model is asked about all eight
rotations/reflections of the input (or a measured subset, ``VIEW_SETS``) and the logits are averaged. Feature maps
are mapped back to the original orientation before averaging, so the CAM
still lines up with the image. Enabled per model by ``"test_time_augmentation":
"dihedral8"`` in its JSON (chosen and measured on val at export). The
classifier runs the 8 views as one batch-8 invoke (:func:`stack`).
"""

from __future__ import annotations

import numpy as np

#: (quarter turns k, flip) pairs; transform = rot90(x, k) then optional left-right flip.
DIHEDRAL8 = tuple((k, flip) for flip in (False, True) for k in range(4))
#: The view sets a model JSON may name in ``test_time_augmentation`` (null: one view, the image as it is).
#: ``flips2`` is the two mirror images, left-right (0, True) and up-down (2, True): 2 passes instead of 8.
VIEW_SETS = {"none": ((0, False),), "flips2": ((0, True), (2, True)), "dihedral8": DIHEDRAL8}


def views_of(name: str | None) -> tuple[tuple[int, bool], ...]:
    """The (k, flip) views of a view-set name from a model JSON (None: the image as it is)."""
    return VIEW_SETS["none" if name is None else name]


def forward(image: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Transform an (H, W, C) array."""
    out = np.rot90(image, k, axes=(0, 1))
    return out[:, ::-1] if flip else out


def inverse(image: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Undo :func:`forward` on an (h, w, C) array."""
    out = image[:, ::-1] if flip else image
    return np.rot90(out, -k, axes=(0, 1))


def stack(image: np.ndarray, views=DIHEDRAL8) -> np.ndarray:
    """The ``views`` of an (H, W, C) array as one contiguous (len(views), H, W, C) batch, in order."""
    return np.stack([forward(image, k, flip) for k, flip in views])
