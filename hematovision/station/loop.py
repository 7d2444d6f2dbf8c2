"""The microscope station: frames in, classified cells out, a running differential and a durable log.

For every frame from a :mod:`~hematovision.station.sources` source the station

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

Resuming (``resume=True``) continues the last session only if it was
interrupted, used the same model and read the same source (:func:`source_key`:
a folder's absolute path; another source is refused with
:class:`~hematovision.station.resume.ResumeSourceError`, another model with
:class:`~hematovision.station.resume.ResumeModelError`; with nothing to resume a
new session starts, and a warning says why). A folder's file is
skipped only if a file of that name with the same content (sha256, logged with
every frame and cell) was done; a file replaced by another image under the same
name is classified again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..cells import detection
from .frames import Frame, FrameSource
from .sources import FolderSource, OpenCVSource
from .differential import Differential
from ..errors import InvalidImageError
from .framegate import (MIN_SHARPNESS, MIN_STAINED_FRACTION, MOTION_THRESHOLD, MOTION_WIDTH, SHARPNESS_WIDTH, FrameQuality, Motion,
                        MotionGate, assess_quality, sharpness)
from .log import StationLog

__all__ = ["MIN_SHARPNESS", "MIN_STAINED_FRACTION", "MOTION_THRESHOLD", "MOTION_WIDTH", "MODES", "SHARPNESS_WIDTH", "FrameQuality",
           "Motion", "MotionGate", "Station", "StationConfig", "StationSummary", "assess_quality", "sharpness", "source_key"]

log = logging.getLogger("hematovision.station.loop")

MODES = ("field", "cell")


SUMMARY_EVERY_S = 30.0  # default seconds between printed differentials
NON_NEGATIVE = ("min_sharpness", "motion_threshold", "summary_every")  # StationConfig's options that may be 0


@dataclass(frozen=True)
class StationConfig:
    """Everything the station needs to know besides the model and the source."""

    db_path: Path
    crops_dir: Path | None = None  # default: <db folder>/<db stem>-crops
    mode: str = "field"
    fps: float | None = None  # at most this many frames per second (default: as fast as they come)
    max_frames: int | None = None
    target_count: int | None = None
    min_sharpness: float = MIN_SHARPNESS  # variance of the Laplacian at the gate's width; 0 accepts every frame
    motion_threshold: float = MOTION_THRESHOLD  # grey-level difference under which the view is unchanged
    fill: float | None = None  # fraction of the crop the cell spans; see field.DEFAULT_FILL
    red_cell_px: float | None = None  # red-cell diameter in px: segmentation sizes and PBC-scale crops (see field)
    summary_every: float = SUMMARY_EVERY_S  # seconds between printed differentials (0: never)
    resume: bool = False  # continue the last session if it was interrupted (kill, power cut, error), same model and source
    source_name: str = ""

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}.")
        for name in ("fps", "max_frames", "target_count", "red_cell_px", "fill", "min_sharpness", "motion_threshold",
                     "summary_every"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and (value >= 0 if name in NON_NEGATIVE else value > 0)):
                raise ValueError(f"{name} must be a finite number {'>= 0' if name in NON_NEGATIVE else '> 0'}, not {value}.")

    @property
    def crops_folder(self) -> Path:
        return self.crops_dir if self.crops_dir is not None else self.db_path.parent / f"{self.db_path.stem}-crops"


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
    shift_warning: str = ""  # the session as one batch looks unlike the training lab's (hematovision/batch_shift.py)
    source_warning: str = ""  # the source ended early (a truncated video file): FrameSource.end_note

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
        self._folder: Path | None = None
        self._sha: tuple[int, str | None] = (-1, None)

    def run(self, source: FrameSource, *, should_stop: Callable[[], object] | None = None) -> StationSummary:
        """Process frames until the source ends, a limit is reached or ``should_stop()`` is truthy.

        The source must be open. ``should_stop`` is asked between frames; a
        string it returns (e.g. ``"SIGTERM"``) becomes the stop reason.
        """
        cfg = self.config
        should_stop = should_stop or (lambda: False)
        with StationLog(cfg.db_path) as db:
            self._folder = source.folder if isinstance(source, FolderSource) else None
            session = self._open_session(db, source)
            summary = StationSummary(session_id=session.id, differential=db.differential(session.id))
            if session.resumed:
                self._skip_done(source, db, session.id, summary.differential.total)
            crops_dir = cfg.crops_folder / f"session-{session.id:04d}"
            crops_dir.mkdir(parents=True, exist_ok=True)
            start = time.monotonic()
            next_due = start
            next_print = start + self._summary_every()
            reason, warned = "", False
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
                            summary.source_warning = source.end_note
                            break
                        continue
                    try:
                        self._process(frame, db, session.id, crops_dir, summary)
                    except InvalidImageError as exc:  # a malformed frame is skipped; the log and the source go on
                        self._skip(frame, "invalid", str(exc), db, session.id, summary, None)
                    if self._summary_every() and time.monotonic() >= next_print:
                        self.printer(summary.differential.format())
                        warned = warned or self._warn_if_shifted(db, session.id)
                        next_print = time.monotonic() + self._summary_every()
            finally:
                summary.elapsed_s = time.monotonic() - start
                summary.stop_reason = reason or "error"
                self._flush_skip_log()
                db.close_session(session.id, stop_reason=summary.stop_reason,
                                 summary={"frames": summary.frames, "repeated_cells": summary.repeated_cells, **summary.skipped})
            summary.shift_warning = db.batch_shift(session.id).message()
        return summary

    def _open_session(self, db: StationLog, source: FrameSource):
        """A new session, or the interrupted one with ``resume``; refuses a damaged database before writing to it."""
        cfg, spec = self.config, self.classifier.spec
        last = db.latest_session()
        if last is not None:
            db.require_intact()
        session = db.open_session(model_name=spec.name, model_sha256=spec.sha256, labels=spec.labels, source=cfg.source_name,
                                  source_key=source_key(source, cfg.source_name), mode=cfg.mode, config=_config_json(cfg),
                                  resume=cfg.resume, counted=spec.counted_labels)
        if cfg.resume and not session.resumed:
            why = "it is empty" if last is None else f"its last session, {last.id}, ended normally ({last.stop_reason})"
            log.warning("--resume: nothing to resume in %s (%s); started session %d", cfg.db_path, why, session.id)
        return session

    def _skip_done(self, source: FrameSource, db: StationLog, session_id: int, cells: int) -> None:
        """Tell the source which frames of the resumed session are done: same name and same content (sha256)."""
        skip, changed = set(), []
        for name, hashes in db.frame_hashes(session_id).items():
            current = file_sha256(self._folder / name) if self._folder is not None and None not in hashes else None
            if current is not None and current not in hashes:
                changed.append(name)
            else:
                skip.add(name)  # same content, or no hash to compare (not a file, schema-1 row): done, by name
        source.skip(skip)
        log.info("resuming session %d at %d cells (%d frames done)", session_id, cells, len(skip))
        if changed:
            log.warning("resuming session %d: %d file(s) changed since they were classified, classifying them again: %s",
                        session_id, len(changed), ", ".join(sorted(changed)[:10]) + (" ..." if len(changed) > 10 else ""))

    def _frame_sha(self, frame: Frame) -> str | None:
        """The content hash of the frame's file (a folder source), computed once per frame; None for other sources."""
        if self._folder is None:
            return None
        if self._sha[0] != frame.index:
            self._sha = (frame.index, file_sha256(self._folder / frame.name))
        return self._sha[1]

    def _warn_if_shifted(self, db: StationLog, session_id: int) -> bool:
        """Print the set-up warning (hematovision/batch_shift.py) with the running differential, as soon as the
        session's cells so far look unlike the training lab's: the technologist learns it while at the microscope."""
        shift = db.batch_shift(session_id)
        if shift.shifted:
            self.printer(f"WARNING (so far): {shift.message()}")
        return shift.shifted

    def _summary_every(self) -> float:
        return self.config.summary_every

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
            crops = detection.crop_cells(frame.image, fill=cfg.fill, red_cell_px=cfg.red_cell_px)
        else:
            crops = [detection.whole_frame(frame.image)]
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
                        crops_dir=crops_dir, source_sha256=self._frame_sha(frame))
            summary.differential.add(pred.label, uncertain=pred.uncertain)
            done += 1
        self.gate.accept(small, crops)
        status = "classified" if done else ("repeated" if crops else "no cells")
        if done:
            summary.frames_classified += 1
        log.debug("frame %s: %s, %d cells found, %d classified", frame.name, status, len(crops), done)
        db.add_frame(session_id, frame=frame, status=status, sharpness=quality.sharpness, found=len(crops), classified=done,
                     detail="" if motion.shift is None else f"shift {motion.shift[0]:.0f},{motion.shift[1]:.0f}",
                     source_sha256=self._frame_sha(frame))

    def _skip(self, frame: Frame, status: str, detail: str, db: StationLog, session_id: int, summary: StationSummary,
              quality: FrameQuality | None) -> None:
        summary.skipped[status] = summary.skipped.get(status, 0) + 1
        if status != "unchanged":  # a still stage streams these all day: counted in the session summary only
            db.add_frame(session_id, frame=frame, status=status, sharpness=quality.sharpness if quality else None, found=0,
                         classified=0, detail=detail, source_sha256=self._frame_sha(frame))
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


def source_key(source: FrameSource, name: str = "") -> str:
    """What a resumed session must have read: a folder's or video's absolute path, else the --source text."""
    if isinstance(source, FolderSource):
        return f"folder:{source.folder.expanduser().resolve()}"
    if isinstance(source, OpenCVSource) and not source.is_camera:
        return f"video:{Path(source.device).expanduser().resolve()}"
    return name or source.description


def file_sha256(path: Path) -> str | None:
    """sha256 of a file's bytes; None if it cannot be read (gone, not a file)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _sleep_until(deadline: float, should_stop: Callable[[], object]) -> None:
    while not should_stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.1))


def _config_json(cfg: StationConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()}
