"""The Review tab's differential scope: a lab copy of the database's model that counts only the lab's classes
(``python -m hematovision scope`` from the page; hematovision/scope.py has the rule). It goes into the app's models
folder and joins the model choices."""

from __future__ import annotations

import json

from ..lab_model_files import read_lab_model
from ..lab_scope import scope_model
from ..scope import ScopeError
from .errors import refusal
from .models import STORE
from .review_actions import _ADAPTING, model_of, name_taken, new_model_name


def scoped_name(name, slide) -> tuple[str, dict | None]:
    """The scoped model's name, checked, and the earlier scope it replaces (None: a new name). Only an earlier
    scoped model of exactly that name is replaced (it holds nothing but its source and classes); any other model of
    that name (ignoring case) is refused, so nothing saved is lost."""
    name, taken = new_model_name(name, f"{slide.model_name}-scoped", example="wbc-5part")
    if taken is None:
        return name, None
    earlier = read_lab_model(STORE.folder / f"{name}.json", kind="scope") if taken == name else None
    if earlier is None:
        raise name_taken(name, taken, f"{slide.model_name}-scoped")
    return name, earlier["scope"]


def scope_session_model(slide, classes, name):
    """Write the scoped copy of the database's model into the models folder; returns its name, its JSON's data and
    the earlier scope it replaced (None if none). One write of the models folder at a time (``_ADAPTING``)."""
    with _ADAPTING:
        source = model_of(slide)
        name, earlier = scoped_name(name, slide)
        try:
            path = scope_model(source.spec.json_path, list(classes or []), STORE.folder, name=name, log=lambda msg: None)
        except ScopeError as exc:
            raise refusal(f"{exc} Tick the classes your lab counts.", where="review") from None
        STORE.refresh()
    return name, json.loads(path.read_text(encoding="utf-8")), earlier


def scope_summary(name, data, earlier=None) -> str:
    """What the scoped model counts, what it flags, and how to use it."""
    scope = data["scope"]
    lines = [f"**{name}** written to the models folder: it names only {', '.join(scope['classes'])}.",
             f"A cell whose first choice is {' or '.join(scope['flagged_when_first_choice_is']) or '-'} is flagged for "
             "review and that first choice is named; every cell the source model flags stays flagged.", "",
             f"Choose **{name}** under Model in Classify or Batch, or run the station with `--model {name}`. "
             "Research use only."]
    if earlier is not None:
        lines[:0] = [f"Replaced the earlier {name} (it counted {', '.join(earlier.get('classes', []))}).", ""]
    return "\n".join(lines)
