"""``python -m hematovision adapt --model NAME_OR_PATH --cells DIR --out OUT_DIR [--name NAME]``

Few-shot adaptation to a lab: refits the model's dense head on the lab's own
labelled cells, DIR/<label>/<image> (labels are the model's class names; a lab
may label only some classes, the others keep the source behaviour). Writes
OUT_DIR/<name>.json with its .tflite (unchanged), .head.npz and .ood.npz, usable
as ``classify --model OUT_DIR/<name>.json``. See hematovision/adapt.py for the
method. Exit status: 0 written, 1 the model or the cells could not be used, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("adapt", help="refit the head on a lab's labelled cells (few-shot)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wbc", help="source model name (wbc, all) or path to a .json/.tflite (default: wbc)")
    p.add_argument("--cells", type=Path, required=True, help="folder of labelled cells, DIR/<label>/<image>")
    p.add_argument("--out", type=Path, required=True, help="folder for the adapted model's files")
    p.add_argument("--name", default=None, help="adapted model name (default: <model>-lab)")
    p.add_argument("--l2", type=float, default=None, help="strength of the pull towards the source head (default 0.01)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..adapt import DEFAULT_L2, adapt
    from ..errors import HematoVisionError

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    try:
        path = adapt(args.model, args.cells, args.out, name=args.name, l2=DEFAULT_L2 if args.l2 is None else args.l2, log=log)
    except (HematoVisionError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
