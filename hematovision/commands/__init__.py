"""The CLI's commands, one module each (``add_parser(subparsers)`` and ``run(args) -> int``; see ``hematovision/__main__.py``).

What several commands share lives here: the default model and the ``--model``
option, the ``--session`` choice, the one-line ``error: ...`` report (and :func:`run_tool` for the
training and export tools) and the JSON report writer. Only the standard library, the registry and the station's schema constants are imported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from ..registry import HUB_MODELS
from ..station.schema import MAX_ROW_ID  # the largest id SQLite stores: a bigger number names no row

#: The model a command uses without ``--model``: the first product model of the registry (the app's first choice too).
DEFAULT_MODEL = next(iter(HUB_MODELS))


def add_model_argument(parser: argparse.ArgumentParser, *, use: str = "") -> None:
    """``--model`` (default :data:`DEFAULT_MODEL`): a name in the models folder, or a model file.

    The help lists the names the models folder offers now (read from its JSON files), so a dropped-in
    model shows up there too.
    """
    from ..registry import model_names

    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"model{use}: a name in the models folder ($HEMATOVISION_MODELS, else models/) or a path to "
                             f"a .json/.tflite; available: {', '.join(model_names())} (default: %(default)s)")




def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number >= 1."""
    return bounded_int(1, MAX_ROW_ID)(text)


def bounded_int(low: int, high: int):
    """An argparse ``type``: a whole number in [low, high] (ids: ``bounded_int(1, MAX_ROW_ID)``)."""

    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be >= {low}")
        if value > high:
            raise argparse.ArgumentTypeError(f"{value} is too large (at most {high})")
        return value

    parse.__name__ = "whole number"
    return parse


def finite_float(low: float | None = None, high: float | None = None, *, low_open: bool = False):
    """An argparse ``type``: a finite number (no nan/inf) in [low, high] (``low_open``: strictly above ``low``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"{value:g} must be {'>' if low_open else '>='} {low:g}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{value:g} must be <= {high:g}")
        return value

    parse.__name__ = "number"
    return parse


def refuse_to_overwrite(out: str | Path, *protected: str | Path | None, what: str = "the station database") -> None:
    """Raise ``FileExistsError`` when writing ``out`` would replace one of ``protected`` (same file, by path or inode).

    An output named like an input (``report --db log.sqlite --fhir log.sqlite``) would silently destroy the
    input; nothing already saved may be lost, so the command refuses and says so.
    """
    target = Path(out)
    for path in protected:
        if path is None:
            continue
        path = Path(path)
        same = target.resolve() == path.resolve()
        if not same and target.exists() and path.exists():
            same = os.path.samefile(target, path)
        if same:
            raise FileExistsError(f"{out} is {what} ({path}); writing there would destroy it. Choose another output file.")


def session_choice(*words: str):
    """An argparse ``type`` for ``--session``: one of ``words`` ('latest', 'all'), lower-cased, or a session id, a whole
    number SQLite can hold (1 to :data:`MAX_ROW_ID`), as its decimal text."""
    allowed = " or ".join([", ".join(["a number", *(f"'{w}'" for w in words[:-1])]), f"'{words[-1]}'"])
    number = bounded_int(1, MAX_ROW_ID)

    def parse(text: str) -> str:
        which = str(text).strip().lower()
        if which in words:
            return which
        if not which.isdigit():
            raise argparse.ArgumentTypeError(f"must be {allowed}, not {text!r}")
        return str(number(which))

    parse.__name__ = "session"  # argparse names the type in its messages
    return parse


def select_sessions(db, which: str) -> list:
    """The sessions of a station log that ``which`` names (see :func:`session_choice`): 'all', 'latest' or an id."""
    if which == "all":
        return db.sessions()
    if which == "latest":
        return [s for s in [db.latest_session()] if s is not None]
    return [db.session(int(which))]


def fail(reason: object, *, status: int = 1) -> int:
    """Print ``error: <reason>`` on stderr (one line for the user, no traceback); return the exit ``status``."""
    print(f"error: {reason}", file=sys.stderr)
    return status


def run_tool(main) -> None:
    """``sys.exit(main())`` for the training and export tools (``python -m training.X``, ``python -m export.X``).

    A missing data folder or file, or a HematoVision error (each says how to fix it), becomes one ``error: ...``
    line and exit status 2 instead of a traceback; any other exception is a bug and keeps its traceback.
    """
    from ..errors import HematoVisionError

    try:
        status = main()
    except (FileNotFoundError, HematoVisionError) as exc:
        status = fail(exc, status=2)
    sys.exit(status)


def write_json(path: str | Path, data: Any, *, indent: int = 2) -> Path:
    """Write ``data`` as JSON (UTF-8, ending in a newline) to ``path``, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent) + "\n", encoding="utf-8")
    return path
