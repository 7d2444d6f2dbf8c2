"""Uploads in, generated files out: the handlers open only files Gradio put in its upload folder."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from .errors import NOT_UPLOADED, refusal
from .paths import OUTPUT_DIR, UPLOAD_DIR

#: Generated files older than this are removed when a new one is made.
OUTPUT_MAX_AGE_S = 3600


def upload_path(value):
    """The local path of an upload. Image events skip Gradio's preprocessing (so the core, not Pillow,
    reads the file and reports what is wrong with it) and receive Gradio's FileData dict. Gradio checks
    the folder only for dicts that carry its "meta" marker, so the check is made here for every request:
    a path outside Gradio's upload folder (one the client named but never uploaded) is refused."""
    if value is None:
        return None
    path = value.get("path") if isinstance(value, dict) else value
    if not path:
        raise refusal("The upload did not arrive (no file path in the request); please upload the file again.")
    resolved = Path(str(path)).resolve()
    if not resolved.is_relative_to(UPLOAD_DIR.resolve()):
        raise refusal(NOT_UPLOADED)
    return str(resolved)


def output_file(name):
    """A fresh path for a generated file inside Gradio's temp folder; outputs older than an hour are removed."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    for folder in OUTPUT_DIR.iterdir():
        if time.time() - folder.stat().st_mtime > OUTPUT_MAX_AGE_S:
            shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=OUTPUT_DIR)) / name
