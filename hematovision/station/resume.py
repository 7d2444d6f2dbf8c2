"""``--resume``: may the interrupted session be continued by this run (same source, same model, same lab scope)?

A resumed session's counts must come from one source and one model: another folder, another network (sha256) or
the same network under another lab differential scope (:mod:`hematovision.scope`; a scoped copy shares its
network's sha256) is refused with what to do, and the interrupted session is left untouched, still resumable.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StationLogError

if TYPE_CHECKING:
    from .log import Session


class ResumeError(StationLogError, ValueError):
    """``--resume`` cannot continue the interrupted session (another source or another model); nothing was written."""


class ResumeSourceError(ResumeError):
    """``--resume`` would continue a session that read another source."""


class ResumeModelError(ResumeError):
    """``--resume`` would continue a session classified by another model (its counts would mix two models)."""


def check_same_model(path: Path, last: "Session", name: str, sha256: str, counted: tuple[str, ...] | None) -> None:
    if last.model_sha256 == sha256 and counted != last.counted:  # the same network, another lab scope
        def said(c):
            return "every class" if c is None else ", ".join(c)
        raise ResumeModelError(
            f"{path}: cannot resume session {last.id}: it counted {said(last.counted)} (model {last.model_name}), and this "
            f"run's model {name} counts {said(counted)}; its differential would mix the two. Resume it with --model "
            f"{last.model_name}, or run without --resume to start a new session (the interrupted one keeps its cells).")
    if last.model_sha256 != sha256:
        raise ResumeModelError(
            f"{path}: cannot resume session {last.id}: it was interrupted while classifying with model {last.model_name} "
            f"(sha256 {last.model_sha256[:12]}), and this run uses {name} (sha256 {sha256[:12]}). Resume it with --model "
            f"{last.model_name}, or run without --resume to start a new session (the interrupted one keeps its cells).")


def check_same_source(path: Path, last: "Session", key: str) -> None:
    old = last.source_key if last.source_key is not None else legacy_source_key(last.source)
    if old != key:
        raise ResumeSourceError(
            f"{path}: cannot resume session {last.id}: it was interrupted while reading {last.source or old!r} ({old}), and this "
            f"run reads {key}. Resume it with --source {last.source or old}, or run without --resume to start a new "
            "session (the interrupted one keeps its cells).")


def legacy_source_key(source: str | None) -> str:
    """The canonical key of a schema-1 session's source string (a folder's path made absolute, as best we can)."""
    kind, _, arg = (source or "").partition(":")
    if kind.strip().lower() in ("folder", "video") and arg:
        return f"{kind.strip().lower()}:{Path(arg).expanduser().resolve()}"
    return source or ""
