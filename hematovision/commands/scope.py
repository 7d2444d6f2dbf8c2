"""``python -m hematovision scope --model NAME_OR_PATH --classes C [C ...] --out OUT_DIR [--name NAME]``

A lab's differential scope: writes OUT_DIR/<name>.json, a copy of the model
(network, head and OOD reference unchanged, same sha256) that names only the
classes the lab counts, e.g. a five-part differential:

    python -m hematovision scope --model wbc-crosslab \\
        --classes neutrophil lymphocyte monocyte eosinophil basophil --out lab-models

Each cell gets the best of those classes. A cell whose first choice is another
class (an immature granulocyte, a nucleated red cell...) is flagged uncertain
and its first choice is named (``outside_scope``), so the technologist sees it;
every cell the source model flags stays flagged. Use it with ``classify --model
OUT_DIR/<name>.json``, the station and the app like any model; a scope can be
written for an adapted model too. See hematovision/scope.py for the rule.
Exit status: 0 written, 1 the model or the classes could not be used, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import add_model_argument, fail
from .adapt import model_name


def add_parser(sub) -> None:
    p = sub.add_parser("scope", help="count only a lab's classes (e.g. a five-part differential)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_argument(p, use=" to scope")
    p.add_argument("--classes", nargs="+", required=True, metavar="CLASS", help="the classes the lab counts (at least two)")
    p.add_argument("--out", type=Path, required=True, help="folder for the scoped model's files")
    p.add_argument("--name", type=model_name, default=None,
                   help="scoped model name: letters, digits, - and _ (default: <model>-scoped). An earlier scoped model "
                        "of that name in --out is replaced; any other model there is never overwritten")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..errors import HematoVisionError
    from ..lab_scope import scope_model

    try:
        path = scope_model(args.model, args.classes, args.out, name=args.name,
                           log=lambda msg: print(msg, file=sys.stderr))
    except (HematoVisionError, OSError) as exc:
        return fail(exc)
    print(path)
    return 0
