"""Values the handlers take as the caller sent them (Gradio's preprocessing off): checked here, and refused with
what to send, before anything is read or written. Whole numbers are whole: 1.5, True and "abc" are refused, not
rounded or converted."""

from __future__ import annotations

import math
import numbers

from .errors import refusal
from .imaging import DEFAULT_OPACITY

PICK_A_CELL = "Pick a cell in the gallery first."


def shown(value) -> str:
    """A value as a message quotes it: short, and its repr (so '' and ' ' are visible)."""
    return repr(value if isinstance(value, str) else str(value))[:40]


def whole_number(value):
    """``value`` (an int, an integral float, or its text) as an int; None when it is not a whole number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            value = float(text)
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def cell_number(value) -> int:
    """A cell id as sent (a number, or its text); "pick a cell" when none is sent, refused when it is not one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise refusal(PICK_A_CELL, where="review")
    number = whole_number(value)
    if number is None:
        raise refusal(f"cell id {shown(value)} is not a cell number: send the #id shown in the gallery (a whole "
                      "number).", where="review")
    return number


def page_number(value) -> int:
    """A page number from 1 (none sent: page 1); the page shown is at most the class's last page."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 1
    number = whole_number(value)
    if number is None or number < 1:
        raise refusal(f"page {shown(value)} is not a page number: send a whole number from 1.", where="review")
    return number


def opacity_value(value) -> float:
    """The heatmap's opacity: a number from 0 to 1 (none sent: :data:`~hematovision.web.imaging.DEFAULT_OPACITY`)."""
    if value is None:
        return DEFAULT_OPACITY
    number = None if isinstance(value, bool) else value
    if isinstance(number, str):
        try:
            number = float(number.strip())
        except ValueError:
            number = None
    if not isinstance(number, numbers.Real) or not 0 <= float(number) <= 1:  # NaN fails both comparisons
        raise refusal(f"opacity must be a number from 0 to 1 (0: the image alone, 1: the heatmap alone), not "
                      f"{shown(value)}.", where="explain")
    return float(number)
