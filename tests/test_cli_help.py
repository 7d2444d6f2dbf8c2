"""What a command's --help says its default is, is the default it runs with: one row per option, so a drifted number fails.

Help states a default as ``(default: VALUE)`` (VALUE ends at ``;``, ``,`` or ``)``), written with argparse's
``%(default)s`` or from the constant the code uses. An option with a real default must state it, and the stated
VALUE, read with the option's own type, must equal it. An option whose default is None (the value is decided
later) may describe it in words; a number there must be the library value named in ``LIBRARY``. ``LIBRARY`` also
pins the real defaults that come from a library constant, so a literal copied into ``default=`` fails too.
"""

from __future__ import annotations

import argparse
import inspect
import re

import pytest

from hematovision import adapt
from hematovision.__main__ import build_parser
from hematovision.cells.detection import DEFAULT_FILL
from hematovision.cells.red_cells import MIN_CIRCLES
from hematovision.commands import DEFAULT_MODEL
from hematovision.commands._pool import default_workers
from hematovision.commands.archive import ArchiveOptions
from hematovision.mesh import MAX_TRIANGLES
from hematovision.mesh.isosurface import UNIT_SPACING
from hematovision.station.framegate import MIN_SHARPNESS, MOTION_THRESHOLD
from hematovision.station.loop import StationConfig
from hematovision.station.sources import PicameraSource

STATED = re.compile(r"\(default:? ([^;,)]*)")
PICAMERA = inspect.signature(PicameraSource).parameters

#: (command, option) -> the library's value: what the parser's default must be, or (default None) what help states.
LIBRARY = {
    **{(command, "--model"): DEFAULT_MODEL for command in ("adapt", "archive", "classify", "mesh", "station", "bench")},
    ("adapt", "--l2"): adapt.DEFAULT_L2,
    ("archive", "--engine"): ArchiveOptions.engine,
    ("calibrate", "--min-circles"): MIN_CIRCLES,
    ("classify", "--workers"): default_workers(),
    ("mesh", "--max-triangles"): MAX_TRIANGLES,
    ("mesh", "--spacing"): UNIT_SPACING,
    ("station", "--mode"): StationConfig.mode,
    ("station", "--min-sharpness"): MIN_SHARPNESS,
    ("station", "--motion-threshold"): MOTION_THRESHOLD,
    ("station", "--fill"): DEFAULT_FILL,
    ("station", "--width"): PICAMERA["width"].default,
    ("station", "--height"): PICAMERA["height"].default,
}


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser, as ``python -m hematovision`` builds them, and ``python -m bench``'s."""
    from bench.__main__ import build_parser as bench_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {**sub.choices, "bench": bench_parser()}


PARSERS = parsers()


def options():
    for command, parser in PARSERS.items():
        for action in parser._actions:
            if action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                yield pytest.param(command, action.option_strings[-1], id=f"{command} {action.option_strings[-1]}")


def action_of(command: str, option: str) -> argparse.Action:
    return next(a for a in PARSERS[command]._actions if option in a.option_strings)


def stated_default(command: str, action: argparse.Action) -> str | None:
    """The VALUE of ``(default: VALUE)`` in the option's help as ``--help`` prints it, or None."""
    text = PARSERS[command]._get_formatter()._expand_help(action) if action.help else ""
    match = STATED.search(" ".join(text.split()))
    return match.group(1).strip() if match else None


def read(action: argparse.Action, text: str):
    """The stated VALUE as the parser would read it from the command line (a list for nargs options)."""
    convert = action.type or str
    if action.nargs not in (None, "?"):
        return [convert(word) for word in text.split()]
    return convert(text)


def has_real_default(action: argparse.Action) -> bool:
    return action.default not in (None, argparse.SUPPRESS, "") and action.nargs != 0  # flags: store_true/false


def same(action: argparse.Action, value, expected) -> bool:
    return list(value) == list(expected) if action.nargs not in (None, "?") else value == expected


@pytest.mark.parametrize("command, option", options())
def test_help_states_the_default_the_command_runs_with(command, option):
    action = action_of(command, option)
    stated = stated_default(command, action)
    if has_real_default(action):
        assert stated is not None, f"{command} {option}: say the default in its help: '(default: %(default)s)'"
        assert same(action, read(action, stated), action.default), (
            f"{command} {option}: help says (default: {stated}) but the parser's default is {action.default!r}")
        if (command, option) in LIBRARY:
            assert same(action, action.default, LIBRARY[command, option]), (
                f"{command} {option}: default {action.default!r} is not the library's {LIBRARY[command, option]!r}; "
                "take it from the constant")
    elif stated is not None and re.search(r"\d", stated):
        assert (command, option) in LIBRARY, (
            f"{command} {option}: help states the number {stated!r} while the default is None; make it the real "
            "default, or name the library value it comes from in LIBRARY")
        assert same(action, read(action, stated), LIBRARY[command, option]), (
            f"{command} {option}: help says (default: {stated}), the library uses {LIBRARY[command, option]!r}")


@pytest.mark.parametrize("command, option", sorted(LIBRARY))
def test_every_library_value_names_a_real_option(command, option):
    action = action_of(command, option)
    assert has_real_default(action) or stated_default(command, action) is not None


def test_a_drifted_number_is_caught():
    """The check itself: a help text that repeats a number the code no longer uses fails."""
    parser = argparse.ArgumentParser()
    action = parser.add_argument("--runs", type=int, default=30, help="timed runs (default: 20)")
    PARSERS["drift"] = parser
    try:
        with pytest.raises(AssertionError, match="parser's default is 30"):
            test_help_states_the_default_the_command_runs_with("drift", "--runs")
        action.help = "timed runs (default: %(default)s)"
        test_help_states_the_default_the_command_runs_with("drift", "--runs")
    finally:
        del PARSERS["drift"]
