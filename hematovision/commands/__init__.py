"""The CLI's commands, one module each (``add_parser(subparsers)`` and ``run(args) -> int``; see ``hematovision/__main__.py``).

What several commands share lives here: the default model and the ``--model``
option, the ``--session`` choice, the one-line ``error: ...`` report and the
JSON report writer. Only the standard library and the registry are imported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..registry import HUB_MODELS

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


def session_choice(*words: str):
    """An argparse ``type`` for ``--session``: a session id or one of ``words`` ('latest', 'all'), lower-cased."""
    allowed = " or ".join([", ".join(["a number", *(f"'{w}'" for w in words[:-1])]), f"'{words[-1]}'"])

    def parse(text: str) -> str:
        which = str(text).strip().lower()
        if which not in words and not which.isdigit():
            raise argparse.ArgumentTypeError(f"must be {allowed}, not {text!r}")
        return which

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


def write_json(path: str | Path, data: Any, *, indent: int = 2) -> Path:
    """Write ``data`` as JSON (UTF-8, ending in a newline) to ``path``, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent) + "\n", encoding="utf-8")
    return path
