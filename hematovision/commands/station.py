"""``python -m hematovision station --source SOURCE --db station.sqlite [options]``

Runs beside the microscope with no screen: reads frames from SOURCE
(camera:INDEX, picamera[:INDEX], folder:DIR, video:FILE), skips dark, empty,
blurry and unchanged frames, finds and classifies the white cells, commits one
row per cell to the SQLite log (crops saved beside it) and prints the running
differential every --summary-every seconds and on exit. SIGTERM or Ctrl-C
finishes the current frame, prints the summary and exits 0 (a second signal
stops at once). Exit status: 0 ok, 1 the model, source or log failed, 2 usage.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from . import add_model_argument, bounded_int, fail, finite_float, positive_int

log = logging.getLogger("hematovision.station.loop")

#: Ranges of the numeric options (argparse refuses anything else, nan and inf included, naming the range).
MIN_FILL = 0.05  # hematovision.cells.detection.framing_box's lower limit
RED_CELL_PX = (2.0, 1000.0)  # a red cell of 1000 px makes 5000 px crops: beyond that, a typo
MAX_FRAME_SIDE = 16384
MAX_THREADS = 1024


def add_parser(sub) -> None:
    from ..cells.detection import DEFAULT_FILL, FRAME_RED_CELLS
    from ..station.framegate import MIN_SHARPNESS, MOTION_THRESHOLD, SHARPNESS_WIDTH
    from ..station.loop import MODES, SUMMARY_EVERY_S, StationConfig
    from ..station.sources import source_forms

    p = sub.add_parser("station", help="run the microscope station (frames in, differential and SQLite log out)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help=source_forms())
    add_model_argument(p)
    p.add_argument("--db", required=True, type=Path, help="SQLite log (created if missing; WAL mode)")
    p.add_argument("--mode", choices=MODES, default=StationConfig.mode,
                   help="field: find every white cell in a whole field; cell: each frame is one centred cell "
                        "(default: %(default)s)")
    p.add_argument("--crops-dir", type=Path, help="where cell crops are saved (default: <db folder>/<db name>-crops)")
    p.add_argument("--fps", type=number(0, low_open=True),
                   help="process at most F frames per second, F > 0 (default: as fast as they come)")
    p.add_argument("--max-frames", type=positive_int, help="stop after N frames (N >= 1)")
    p.add_argument("--target-count", type=positive_int,
                   help="stop after N classified cells, N >= 1 (e.g. 100 for a 100-cell differential)")
    p.add_argument("--min-sharpness", type=number(0), default=MIN_SHARPNESS,
                   help=f"focus threshold >= 0, variance of the Laplacian at {SHARPNESS_WIDTH} px wide "
                        "(default: %(default)s; 0 accepts every frame)")
    p.add_argument("--motion-threshold", type=number(0, 255), default=MOTION_THRESHOLD,
                   help="grey-level difference, 0 to 255, under which the view is unchanged (default: %(default)s)")
    p.add_argument("--fill", type=number(MIN_FILL, 1),
                   help=f"crop so that the cell's larger side spans this fraction of it, {MIN_FILL:g} to 1 (default: "
                        f"{DEFAULT_FILL}; with --red-cell-px: the PBC scale)")
    p.add_argument("--red-cell-px", type=number(*RED_CELL_PX),
                   help=f"red-cell diameter in pixels ({RED_CELL_PX[0]:g} to {RED_CELL_PX[1]:g}), measured for this camera "
                        "(python -m hematovision calibrate FIELD...): "
                        "sets the segmentation's size limits and crops at the PBC scale, "
                        f"{FRAME_RED_CELLS:g} red cells wide (default: size limits from the frame size, --fill framing)")
    p.add_argument("--summary-every", type=number(0), default=SUMMARY_EVERY_S,
                   help="seconds >= 0 between printed differentials (default: %(default)s; 0: only on exit)")
    p.add_argument("--resume", action="store_true",
                   help="continue the last session in --db if it was interrupted (killed, power cut, error); refused if it "
                        "read another source or used another model; a folder's files already done (same name and sha256) "
                        "are skipped")
    p.add_argument("--no-watch", action="store_true", help="folder source: process the files present, then stop")
    width, height = picamera_size()
    p.add_argument("--width", type=bounded_int(1, MAX_FRAME_SIDE),
                   help=f"camera frame width, 1 to {MAX_FRAME_SIDE} (default: the camera's own; {width} for picamera)")
    p.add_argument("--height", type=bounded_int(1, MAX_FRAME_SIDE),
                   help=f"camera frame height, 1 to {MAX_FRAME_SIDE} (default: the camera's own; {height} for picamera)")
    p.add_argument("--threads", type=bounded_int(1, MAX_THREADS),
                   help=f"TFLite interpreter threads, 1 to {MAX_THREADS} (default: every core)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every frame")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    p.set_defaults(run=run)


def number(low: float, high: float | None = None, *, low_open: bool = False):
    """:func:`finite_float` whose every refusal (nan and inf included) names the valid range."""
    parse = finite_float(low, high, low_open=low_open)
    span = f"from {low:g} to {high:g}" if high is not None else f"{'>' if low_open else '>='} {low:g}"

    def check(text: str) -> float:
        try:
            return parse(text)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc}; give a number {span}") from None

    check.__name__ = "number"
    return check


def picamera_size() -> tuple[int, int]:
    """The frame size a Pi camera is opened at without --width/--height: :class:`PicameraSource`'s own defaults."""
    import inspect

    from ..station.sources import PicameraSource

    params = inspect.signature(PicameraSource).parameters
    return params["width"].default, params["height"].default


class StopFlag:
    """Set by SIGTERM/SIGINT: the station finishes the current frame, then stops; a second signal stops at once."""

    def __init__(self):
        self.signal_name: str | None = None

    def __call__(self) -> str | None:
        return self.signal_name

    def handle(self, signum, _frame) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        log.info("%s received: finishing the current frame", self.signal_name)


def run(args) -> int:
    from ..station.sources import open_source
    from ..classifier import load_model
    from ..errors import HematoVisionError, SourceSpecError
    from ..station.loop import Station, StationConfig
    from ..station.schema import storable

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        source = open_source(args.source, watch=not args.no_watch, width=args.width, height=args.height)
        config = StationConfig(db_path=args.db, crops_dir=args.crops_dir, mode=args.mode, fps=args.fps, max_frames=args.max_frames,
                               target_count=args.target_count, min_sharpness=args.min_sharpness,
                               motion_threshold=args.motion_threshold, fill=args.fill, red_cell_px=args.red_cell_px,
                               summary_every=args.summary_every, resume=args.resume, source_name=args.source)
    except (SourceSpecError, ValueError) as exc:
        return fail(exc, status=2)
    try:
        clf = load_model(args.model, num_threads=args.threads)
    except (HematoVisionError, OSError) as exc:
        return fail(f"cannot load model {args.model!r}: {exc}")
    stop = StopFlag()
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    printer = lambda text: print(text, flush=True)  # noqa: E731 - stdout may be a pipe (journald)
    printer(storable(f"station: model {clf.spec.name} (sha256 {clf.spec.sha256[:12]}), source {args.source}, mode {args.mode}, "
                     f"log {args.db}, crops {config.crops_folder}"))
    try:
        with source:
            summary = Station(clf, config, printer=printer).run(source, should_stop=stop)
    except KeyboardInterrupt:
        print("stopped at once by a second signal; committed cells are in the log", file=sys.stderr)
        return 130
    except (HematoVisionError, OSError) as exc:
        return fail(exc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    printer(f"session {summary.session_id}: {summary.format()}")
    for warning in (summary.source_warning, summary.shift_warning):
        if warning:
            printer(f"WARNING: {warning}")
    return 0
