"""The microscope station: frames in, classified cells out, a running differential and a durable log.

For every frame from a :mod:`~hematovision.camera` source the station

1. checks its quality (:func:`assess_quality`): a dark, empty or out-of-focus
   frame is skipped and the reason logged;
2. checks for stage motion (:class:`MotionGate`): a frame showing the same view
   as the last classified one is skipped ("unchanged"), and in field mode,
   after a stage move smaller than the field, the cells already classified in
   the previous field are recognised (phase correlation) and not counted twice;
3. finds the cells (field mode: every nucleated cell, cropped like a training
   image; cell mode: the frame is one centred cell), classifies each, saves the
   crop and commits one row per cell to the SQLite log (:class:`StationLog`);
4. adds each cell to the running :class:`Differential` and stops at
   ``target_count`` cells, ``max_frames`` frames, the end of the source, or
   when ``should_stop()`` turns True (SIGTERM/SIGINT in the CLI), always
   between frames.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from . import field as fieldmode
from .camera import Frame, FrameSource
from .differential import Differential
from .errors import InvalidImageError
from .stationlog import StationLog

log = logging.getLogger("hematovision.station")

MODES = ("field", "cell")
#: Default focus threshold: variance of the Laplacian of the grey frame scaled to
#: 320 px wide. In-focus BCCD fields measure 15-26, PBC cells 70-800; a 2-px blur
#: brings BCCD to 3-6. Calibrate for a camera with ``--min-sharpness 0`` (each
#: frame's sharpness is logged) and pick a value between defocused and focused.
MIN_SHARPNESS = 10.0
#: Mean absolute grey difference (0-255, on a 160 px wide, blurred copy) under
#: which a frame counts as the same view as the last classified one.
MOTION_THRESHOLD = 2.0
#: Fraction of pixels that must be stained for a frame not to be empty.
MIN_STAINED_FRACTION = 0.005
SHARPNESS_WIDTH = 320
MOTION_WIDTH = 160


@dataclass(frozen=True)
class StationConfig:
    """Everything the station needs to know besides the model and the source."""

    db_path: Path
    crops_dir: Path | None = None  # default: <db folder>/<db stem>-crops
    mode: str = "field"
    fps: float | None = None  # at most this many frames per second (default: as fast as they come)
    max_frames: int | None = None
    target_count: int | None = None
    min_sharpness: float | None = None
    motion_threshold: float | None = None
    fill: float | None = None  # fraction of the crop the cell spans; see field.DEFAULT_FILL
    red_cell_px: float | None = None  # red-cell diameter in px: segmentation sizes and PBC-scale crops (see field)
    summary_every: float | None = None  # seconds between printed differentials (default 30; 0: never)
    resume: bool = False  # continue the last session if it was interrupted (kill, power cut, error) and used this model
    source_name: str = ""

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}.")
        for name in ("fps", "max_frames", "target_count"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, not {value}.")

    @property
    def crops_folder(self) -> Path:
        return self.crops_dir if self.crops_dir is not None else self.db_path.parent / f"{self.db_path.stem}-crops"


@dataclass(frozen=True)
class FrameQuality:
    """``status`` is ``ok``, ``dark``, ``empty`` or ``blurry``."""

    status: str
    sharpness: float
    stained_fraction: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image, shrunk to at most 320 px wide."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if grey.shape[1] > SHARPNESS_WIDTH:
        h = max(1, round(grey.shape[0] * SHARPNESS_WIDTH / grey.shape[1]))
        grey = cv2.resize(grey, (SHARPNESS_WIDTH, h), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def assess_quality(rgb: np.ndarray, *, min_sharpness: float | None = None) -> FrameQuality:
    """Is the frame worth classifying? Dark (lamp off), empty (nothing stained) or blurry frames are not."""
    min_sharpness = MIN_SHARPNESS if min_sharpness is None else min_sharpness
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small = grey[::4, ::4]
    bright = float(np.percentile(small, 95))
    stained = float(np.mean(small < bright * 0.85)) if bright > 0 else 0.0
    sharp = sharpness(rgb)
    if bright < 40:
        return FrameQuality("dark", sharp, stained)
    if stained < MIN_STAINED_FRACTION:
        return FrameQuality("empty", sharp, stained)
    if sharp < min_sharpness:
        return FrameQuality("blurry", sharp, stained)
    return FrameQuality("ok", sharp, stained)


@dataclass(frozen=True)
class Motion:
    """How a frame relates to the last classified one.

    ``unchanged``: same view (skip the frame). ``shift``: the stage moved by
    ``(dx, dy)`` pixels and the fields overlap (cells seen before can be
    recognised); None when the view is new or could not be registered.
    """

    unchanged: bool
    difference: float
    shift: tuple[float, float] | None = None


class MotionGate:
    """Remembers the last classified view and its cells; tells unchanged frames and repeated cells apart."""

    def __init__(self, *, threshold: float | None = None):
        self.threshold = MOTION_THRESHOLD if threshold is None else threshold
        self._ref: np.ndarray | None = None
        self._scale = 1.0
        self._centroids: list[tuple[float, float, float]] = []  # x, y, radius

    def _small(self, rgb: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, MOTION_WIDTH / grey.shape[1])
        if scale < 1.0:
            size = (MOTION_WIDTH, max(8, round(grey.shape[0] * scale)))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        self._scale = scale
        small = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.0)
        return small - small.mean()

    def check(self, rgb: np.ndarray) -> tuple[Motion, np.ndarray]:
        """The motion since the last :meth:`accept` and the small grey copy to pass back to it."""
        small = self._small(rgb)
        ref = self._ref
        if ref is None or ref.shape != small.shape:
            return Motion(False, float("inf")), small
        diff = float(np.mean(np.abs(small - ref)))
        if diff < self.threshold:
            return Motion(True, diff, (0.0, 0.0)), small
        # Copies: OpenCV 5's phaseCorrelate windows its inputs in place.
        (dx, dy), _ = cv2.phaseCorrelate(ref.copy(), small.copy(), cv2.createHanningWindow(small.shape[::-1], cv2.CV_32F))
        ix, iy = int(round(dx)), int(round(dy))
        h, w = small.shape
        if abs(ix) > w * 0.7 or abs(iy) > h * 0.7:
            return Motion(False, diff), small
        # Verify: the overlapping parts must agree once aligned (current(x) = ref(x - d)).
        cur = small[max(iy, 0):h + min(iy, 0), max(ix, 0):w + min(ix, 0)]
        old = ref[max(-iy, 0):h + min(-iy, 0), max(-ix, 0):w + min(-ix, 0)]
        aligned = float(np.mean(np.abs((cur - cur.mean()) - (old - old.mean()))))
        if aligned < 2.0 * self.threshold:
            return Motion(False, diff, (dx / self._scale, dy / self._scale)), small
        return Motion(False, diff), small

    def accept(self, small: np.ndarray, crops: list[fieldmode.CellCrop]) -> None:
        """Make this frame (as returned by :meth:`check`) and its cells the reference."""
        self._ref = small
        self._centroids = [(c.centroid[0], c.centroid[1], _radius(c)) for c in crops]

    def seen_before(self, crop: fieldmode.CellCrop, motion: Motion) -> bool:
        """True when the stage moved by a known shift and this cell was in the previous field."""
        if motion.shift is None:
            return False
        dx, dy = motion.shift
        x, y = crop.centroid[0] - dx, crop.centroid[1] - dy
        return any((x - px) ** 2 + (y - py) ** 2 <= r * r for px, py, r in self._centroids)


def _radius(crop: fieldmode.CellCrop) -> float:
    x0, y0, x1, y1 = crop.cell_box
    return max(8.0, 0.5 * min(x1 - x0, y1 - y0))


@dataclass
class StationSummary:
    """What a run did; ``stop_reason``: ``source ended``, ``max frames``, ``target count``, a signal name or ``stopped``."""

    session_id: int
    differential: Differential
    frames: int = 0
    frames_classified: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    repeated_cells: int = 0
    elapsed_s: float = 0.0
    stop_reason: str = ""

    @property
    def cells(self) -> int:
        return self.differential.total

    def format(self) -> str:
        fps = self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        lines = [
            f"{self.frames} frames in {self.elapsed_s:.1f} s ({fps:.1f}/s), {self.frames_classified} with cells; "
            f"skipped: {skipped}; {self.repeated_cells} cells seen in the previous field not recounted",
            self.differential.format(),
        ]
        if self.stop_reason:
            lines.append(f"stopped: {self.stop_reason}")
        return "\n".join(lines)


class Station:
    """Runs a classifier over a frame source; see the module docstring."""

    def __init__(self, classifier, config: StationConfig, *, printer: Callable[[str], None] | None = None):
        self.classifier = classifier
        self.config = config
        self.printer = printer or print
        self.gate = MotionGate(threshold=config.motion_threshold)
        self._last_skip = ("", 0)

    def run(self, source: FrameSource, *, should_stop: Callable[[], object] | None = None) -> StationSummary:
        """Process frames until the source ends, a limit is reached or ``should_stop()`` is truthy.

        The source must be open. ``should_stop`` is asked between frames; a
        string it returns (e.g. ``"SIGTERM"``) becomes the stop reason.
        """
        cfg = self.config
        should_stop = should_stop or (lambda: False)
        spec = self.classifier.spec
        with StationLog(cfg.db_path) as db:
            session = db.open_session(model_name=spec.name, model_sha256=spec.sha256, labels=spec.labels,
                                      source=cfg.source_name, mode=cfg.mode, config=_config_json(cfg), resume=cfg.resume)
            summary = StationSummary(session_id=session.id, differential=db.differential(session.id, labels=spec.labels))
            if summary.differential.total:
                done = db.frame_names(session.id)
                source.skip(done)  # a folder does not give its processed files again
                log.info("resuming session %d at %d cells (%d frames done)", session.id, summary.differential.total, len(done))
            crops_dir = cfg.crops_folder / f"session-{session.id:04d}"
            crops_dir.mkdir(parents=True, exist_ok=True)
            start = time.monotonic()
            next_due = start
            next_print = start + self._summary_every()
            reason = ""
            try:
                while True:
                    why = should_stop()
                    if why:
                        reason = why if isinstance(why, str) else "stopped"
                        break
                    if cfg.max_frames is not None and summary.frames >= cfg.max_frames:
                        reason = "max frames"
                        break
                    if cfg.target_count is not None and summary.cells >= cfg.target_count:
                        reason = "target count"
                        break
                    if cfg.fps:
                        _sleep_until(next_due, should_stop)
                        next_due = max(next_due + 1.0 / cfg.fps, time.monotonic())
                    frame = source.read(timeout=0.25)
                    if frame is None:
                        if source.ended:
                            reason = "source ended"
                            break
                        continue
                    try:
                        self._process(frame, db, session.id, crops_dir, summary)
                    except InvalidImageError as exc:  # a malformed frame is skipped; the log and the source go on
                        self._skip(frame, "invalid", str(exc), db, session.id, summary, None)
                    if self._summary_every() and time.monotonic() >= next_print:
                        self.printer(summary.differential.format())
                        next_print = time.monotonic() + self._summary_every()
            finally:
                summary.elapsed_s = time.monotonic() - start
                summary.stop_reason = reason or "error"
                self._flush_skip_log()
                db.close_session(session.id, stop_reason=summary.stop_reason,
                                 summary={"frames": summary.frames, "repeated_cells": summary.repeated_cells, **summary.skipped})
        return summary

    def _summary_every(self) -> float:
        return 30.0 if self.config.summary_every is None else self.config.summary_every

    def _process(self, frame: Frame, db: StationLog, session_id: int, crops_dir: Path, summary: StationSummary) -> None:
        cfg = self.config
        summary.frames += 1
        quality = assess_quality(frame.image, min_sharpness=cfg.min_sharpness)
        if not quality.ok:
            self._skip(frame, quality.status, f"sharpness {quality.sharpness:.1f}, stained {quality.stained_fraction:.1%}",
                       db, session_id, summary, quality)
            return
        motion, small = self.gate.check(frame.image)
        if motion.unchanged:
            self._skip(frame, "unchanged", f"difference {motion.difference:.2f}", db, session_id, summary, quality)
            return
        if cfg.mode == "field":
            crops = fieldmode.crop_cells(frame.image, fill=cfg.fill, red_cell_px=cfg.red_cell_px)
        else:
            crops = [fieldmode.whole_frame(frame.image)]
        self._flush_skip_log()
        done = 0
        for k, crop in enumerate(crops):
            if cfg.target_count is not None and summary.cells >= cfg.target_count:
                break
            if cfg.mode == "field" and self.gate.seen_before(crop, motion):
                summary.repeated_cells += 1
                continue
            pred = self.classifier.predict(crop.image, cam=False)
            db.add_cell(session_id, frame=frame, index_in_frame=k, crop=crop, prediction=pred, model_sha256=self.classifier.spec.sha256,
                        crops_dir=crops_dir)
            summary.differential.add(pred.label, uncertain=pred.uncertain)
            done += 1
        self.gate.accept(small, crops)
        status = "classified" if done else ("repeated" if crops else "no cells")
        if done:
            summary.frames_classified += 1
        log.debug("frame %s: %s, %d cells found, %d classified", frame.name, status, len(crops), done)
        db.add_frame(session_id, frame=frame, status=status, sharpness=quality.sharpness, found=len(crops), classified=done,
                     detail="" if motion.shift is None else f"shift {motion.shift[0]:.0f},{motion.shift[1]:.0f}")

    def _skip(self, frame: Frame, status: str, detail: str, db: StationLog, session_id: int, summary: StationSummary,
              quality: FrameQuality | None) -> None:
        summary.skipped[status] = summary.skipped.get(status, 0) + 1
        if status != "unchanged":  # a still stage streams these all day: counted in the session summary only
            db.add_frame(session_id, frame=frame, status=status, sharpness=quality.sharpness if quality else None, found=0,
                         classified=0, detail=detail)
        last, repeats = self._last_skip
        if status == last:
            self._last_skip = (status, repeats + 1)
            return
        self._flush_skip_log()
        level = logging.DEBUG if status == "unchanged" else logging.INFO
        log.log(level, "frame %s skipped: %s (%s)", frame.name, status, detail)
        self._last_skip = (status, 0)

    def _flush_skip_log(self) -> None:
        last, repeats = self._last_skip
        if repeats:
            log.log(logging.DEBUG if last == "unchanged" else logging.INFO, "... and %d more frames skipped: %s", repeats, last)
        self._last_skip = ("", 0)


def _sleep_until(deadline: float, should_stop: Callable[[], object]) -> None:
    while not should_stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.1))


def _config_json(cfg: StationConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()}
