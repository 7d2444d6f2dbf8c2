"""``python -m hematovision <command>``: classify | mesh | station | review | report | adapt | scope | archive | calibrate.

Each command lives in ``hematovision/commands/<name>.py`` with
``add_parser(subparsers)`` and ``run(args) -> int``; heavy libraries are
imported inside ``run``. Exit status: 0 ok, 1 some input failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

COMMANDS = ("classify", "mesh", "station", "review", "report", "adapt", "scope", "archive", "calibrate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hematovision", description="HematoVision: blood-cell classification on the edge. Research use only, not a diagnostic device.")
    parser.add_argument("--version", action="version", version=f"hematovision {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"hematovision.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hematovision.commands.{name}":
                raise
            continue  # command not built yet
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
