"""Refusals and the handlers' error boundary: every user error becomes a gr.Error that says what to do."""

from __future__ import annotations

import logging
import re
from functools import wraps

import gradio as gr
from gradio.exceptions import ComponentProcessingError, Error as GradioError, InvalidPathError
from pydantic import ValidationError
from starlette.responses import PlainTextResponse

from ..errors import HematoVisionError
from .paths import UPLOAD_DIR

log = logging.getLogger("hematovision.app")
ERROR_TITLE = "HematoVision could not process this file"
NOT_UPLOADED = ("Only files uploaded to this app can be processed: upload the file first (in the page, or with "
                "gradio_client's handle_file(PATH), which uploads it) and send the path the upload returned.")
NOT_A_FILE = ("expected an uploaded file: send handle_file(PATH) with gradio_client, or POST the file to "
              "/gradio_api/upload and send {\"path\": <the returned path>, \"meta\": {\"_type\": \"gradio.FileData\"}}.")
UNNAMED_UPLOAD = ("400: every file part of an upload needs a file name (Content-Disposition: form-data; name=\"files\"; "
                  "filename=\"cell.jpg\"); gradio_client's handle_file(PATH) sends one.")
#: The core's multi-page hint names the CLI; in the page, the z-stack has its own input.
CLI_ZSTACK_HINT = re.compile(r"For a z-stack use `python -m hematovision mesh [^`]*`\.?")
WEB_ZSTACK_HINT = "For a z-stack (multi-page TIFF), upload it in the 3D tab, under Z-stack."


def refusal(message, where="", title=ERROR_TITLE):
    """A gr.Error for a request the app cannot serve (the user's input, not a bug): its message reaches the
    caller, and the server log gets one line with the reason (no traceback)."""
    log.warning("%srefused: %s", f"{where}: " if where else "", message)
    return gr.Error(message, title=title, print_exception=False)


def public(exc):
    """The error message for the user: their file name, not our upload folders (every folder under Gradio's upload
    folder, the Review tab's working copies included); in the page, not the CLI."""
    text = re.sub(re.escape(str(UPLOAD_DIR)) + r"/(?:[^/\s'\"`]+/)+", "", str(exc))
    return CLI_ZSTACK_HINT.sub(WEB_ZSTACK_HINT, text)


def user_errors(fn):
    """The handlers' error boundary. The core's input errors (HematoVisionError, and the ValueError it documents
    for bad arguments) become a gr.Error with their message and one log line; anything else is a bug: its
    traceback goes to the log, and the caller gets a message saying so. Either way the app keeps serving."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (HematoVisionError, ValueError) as exc:
            raise refusal(public(exc), where=fn.__name__) from exc
        except Exception as exc:
            log.exception("%s failed", fn.__name__)
            raise gr.Error(f"HematoVision failed on this request ({type(exc).__name__}); the error is in the server "
                           "log. Please report it with the file.", print_exception=False) from exc
    return wrapper


class Blocks(gr.Blocks):
    """gr.Blocks whose refusals before a handler runs say what to send instead, without a traceback in the log.

    Gradio checks each request's inputs before the handler: a path the client names but never uploaded
    (InvalidPathError), a value that is not a file (pydantic's ValidationError), a value a component cannot
    preprocess (ComponentProcessingError), and the components' own checks (gradio's Error: a File's type, a
    Number's minimum, a Radio's choices), which Gradio would log with a traceback. Here each becomes a refusal."""

    async def preprocess_data(self, block_fn, inputs, state, explicit_call=False):
        where = f"/{block_fn.api_name}"
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except InvalidPathError as exc:
            log.debug("%s: %s", where, exc)
            raise refusal(f"{where}: {NOT_UPLOADED}") from None
        except (ValidationError, ComponentProcessingError, GradioError) as exc:
            log.debug("%s: %s", where, exc)
            raise refusal(f"{where}: {input_problem(block_fn.inputs, inputs, exc)}") from None


CHOICE_BLOCKS = (gr.Radio, gr.Dropdown, gr.CheckboxGroup)
VALUE_BLOCKS = (*CHOICE_BLOCKS, gr.Number, gr.Slider, gr.Checkbox, gr.Textbox)


def input_problem(blocks, values, exc) -> str:
    """What is wrong with the input that Gradio's preprocessing refused, and what to send instead."""
    at = re.search(r"input component at index (\d+)", str(exc)) if isinstance(exc, ComponentProcessingError) else None
    index = int(at.group(1)) if at else _failing_value(blocks, values)
    block = blocks[index] if index is not None and index < len(blocks) else None
    if block is None or getattr(block, "data_model", None) is not None:  # a file input
        return f"{exc.message} Upload a file of one of those types." if isinstance(exc, GradioError) else NOT_A_FILE
    label, value = block.label or block.get_block_name(), values[index] if index < len(values) else None
    if isinstance(block, CHOICE_BLOCKS):
        choices = ", ".join(str(v) for _, v in block.choices)
        return f"{str(value)[:40]!r} is not one of the choices for {label}; choose one of: {choices}."
    if isinstance(block, (gr.Number, gr.Slider)):
        low, high = block.minimum, block.maximum
        span = (f" from {low:g}" if low is not None else "") + (f" to {high:g}" if high is not None else "")
        return f"{label} must be a number{span}, not {str(value)[:40]!r}."
    return f"{label}: {exc.message if isinstance(exc, GradioError) else 'not a valid value'} ({str(value)[:40]!r})."


def _failing_value(blocks, values):
    """The index of the first value that its (non-file) component refuses, if any: a gradio Error names none."""
    for index, (block, value) in enumerate(zip(blocks, values)):
        if isinstance(block, VALUE_BLOCKS):
            try:
                block.preprocess(value)
            except Exception:  # noqa: BLE001 - any refusal of the component's own check marks the culprit
                return index
    return None


class UnnamedUploadRefusal:
    """ASGI middleware: Gradio answers an upload whose file part has no file name with HTTP 500 (its upload route
    raises TypeError); that is the client's mistake, so the answer is 400 with what to send."""

    def __init__(self, asgi_app):
        self.app = asgi_app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith("/upload"):
            return await self.app(scope, receive, send)
        try:
            await self.app(scope, receive, send)
        except TypeError as exc:
            if "GradioUploadFile" not in str(exc):
                raise
            log.warning("upload refused: a file part without a file name")
            await PlainTextResponse(UNNAMED_UPLOAD, status_code=400)(scope, receive, send)
