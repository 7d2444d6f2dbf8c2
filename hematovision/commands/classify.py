"""``python -m hematovision classify [--model NAME_OR_PATH] [--cam-dir DIR] [--workers N] PATH...``

Prints one JSON object per input on stdout:
``{"path", "label", "confidence", "probabilities", "uncertain", "out_of_distribution"}``, or
``{"path", "error"}`` with a one-line reason (the run goes on); a file name that
is not valid UTF-8 is printed with those bytes as ``\\xNN``. Folders expand
to the image files inside them (sorted, not recursive); an empty folder, a
folder without images, a FIFO, a device or a symlink loop gets its own error
row. ``--workers N`` classifies in N processes (default: every core), one model
each; the lines and their order are the same for any N. Exit status: 0 all
classified, 1 some input failed or the model could not be loaded, 2 usage error.
When the inputs, taken as one batch, are out of distribution or atypical far more
often than the training lab's own cells (``hematovision.batch_shift``), a warning on stderr
says so: on an unfamiliar microscope even the confident answers are unreliable.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..batch_shift import check_batch
from ..images import IMAGE_SUFFIXES
from . import add_model_argument, fail, positive_int
from ..runtime import threads_per_worker
from ._pool import Task, default_workers, expand, iter_rows


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="classify cell images, one JSON line each", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help=f"image files or folders of images ({', '.join(IMAGE_SUFFIXES)})")
    add_model_argument(p)
    p.add_argument("--cam-dir", type=Path, help="write a Grad-CAM overlay PNG per input into this folder")
    p.add_argument("--threads", type=positive_int, default=None, help="TFLite interpreter threads per worker (default: the cores shared out over the workers)")
    p.add_argument("--workers", type=positive_int, default=default_workers(),
                   help="worker processes, one model each (default: %(default)s, every core here; 1: in this process)")
    p.set_defaults(run=run)


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _make_cam_dir(folder: Path | None) -> str | None:
    """Create ``--cam-dir`` (and its parents) before any image is classified; why it cannot be, or None."""
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--cam-dir: cannot create {folder} ({exc.strerror or exc}); pass a folder you can write to."
    return None


def run(args) -> int:
    from ..classifier import load_model
    from ..errors import HematoVisionError

    if args.cam_dir is not None and args.cam_dir.exists() and not args.cam_dir.is_dir():
        return fail(f"--cam-dir: {args.cam_dir} is a file, not a folder; pass a folder (it is created if missing).",
                    status=2)
    threads = threads_per_worker(args.threads, args.workers)  # this process's model serves --workers 1 (and is forked)
    try:
        clf = load_model(args.model, num_threads=threads)
    except (HematoVisionError, OSError) as exc:
        return fail(f"cannot load model {args.model!r}: {exc}")
    problem = _make_cam_dir(args.cam_dir)
    if problem:
        return fail(problem)
    tasks = [Task(index=i, item=item, cam_dir=args.cam_dir) for i, item in enumerate(expand(args.paths))]
    failed, ood, atypical = 0, [], []
    try:
        for row in iter_rows(tasks, clf=clf, model=args.model, threads=threads, workers=args.workers):
            failed += "error" in row
            ood.append(row.get("out_of_distribution"))
            atypical.append(row.get("atypical"))
            _emit(row)
    except BrokenProcessPool as exc:
        return fail(f"a worker process died ({exc}); re-run with --workers 1 to see which file stops it.")
    shift = check_batch(ood, atypical=atypical)
    if shift.shifted:  # stderr: stdout stays one JSON line per input
        print(f"hematovision classify: warning: {shift.message()}", file=sys.stderr)
    return 1 if failed else 0
