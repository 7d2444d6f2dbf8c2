"""What every frame source gives and how it behaves: :class:`Frame` and the :class:`FrameSource` base class.

Concrete sources (cameras, folders, video, fakes) and the registry that builds
them from a ``kind:ARG`` string live in :mod:`hematovision.station.sources`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np


@dataclass(frozen=True, eq=False)
class Frame:
    """One image from a source: ``image`` is RGB uint8 ``(H, W, 3)``.

    ``index`` counts frames from 0 within the source; ``name`` says where the
    frame came from (``"IMG_0012.png"``, ``"camera:0#123"``) and goes into the log.
    """

    image: np.ndarray
    index: int
    name: str
    timestamp: float


class FrameSource:
    """Base class: a context manager that yields :class:`Frame` objects through :meth:`read`."""

    description = "source"

    def __init__(self) -> None:
        self._count = 0
        self._ended = False
        self._end_note = ""

    @property
    def end_note(self) -> str:
        """Why the source ended early (e.g. a truncated video file), or ``""``; read once :attr:`ended` is True."""
        return self._end_note

    @property
    def ended(self) -> bool:
        """True once the source has no more frames (never True for a live camera)."""
        return self._ended

    def open(self) -> None:
        """Acquire the device or file; called by ``__enter__``."""

    def close(self) -> None:
        """Release the device or file; called by ``__exit__``, safe to call twice."""

    def read(self, *, timeout: float | None = None) -> Frame | None:
        raise NotImplementedError

    def skip(self, names: Iterable[str]) -> None:
        """Frames with these names were processed before (a resumed session): do not give them again.

        Only a source whose frame names identify an image (a folder's file
        names) can honour this; for the others it does nothing.
        """

    def _frame(self, rgb: np.ndarray, name: str | None = None) -> Frame:
        frame = Frame(image=rgb, index=self._count, name=name or f"{self.description}#{self._count}", timestamp=time.time())
        self._count += 1
        return frame

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
