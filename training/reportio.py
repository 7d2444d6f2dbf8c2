"""Writing the JSON reports of the training-side commands (robustness, CAM localisation, ...).

One place for the report file's form: indented JSON, its folder created, no
trailing newline (as the shipped reports/ were written).
"""

from __future__ import annotations

import json
from pathlib import Path


def write_report(report: dict, out: str | Path | None) -> str:
    """``report`` as indented JSON text, also written to ``out`` (its folder made first) when a path is given.

    Returns the text, so a command can print it as well.
    """
    text = json.dumps(report, indent=2)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return text
