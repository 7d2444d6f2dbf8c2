"""Write a lab's copy of a model that counts only the lab's differential (``python -m hematovision scope``).

The network, head and OOD reference are copied unchanged (same sha256); the JSON
gains a ``scope`` entry (hematovision/scope.py says what it does to a
prediction). The files appear in OUT only when all are complete, and never over
another model's files (hematovision/lab_model_files.py); an earlier scoped
model of the same name is replaced.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Sequence

from .lab_model_files import check_name, earlier_lab_model, staged
from .registry import resolve
from .scope import DifferentialScope

RULE = ("label = the best class in scope; confidence = its probability, not renormalised; a cell whose first choice is "
        "outside the scope is flagged uncertain and names that choice (outside_scope); every flag of the source model stays")


def scope_model(model: str | Path, classes: Sequence[str], out_dir: str | Path, *, name: str | None = None,
                log=print) -> Path:
    """Write OUT_DIR/<name>.json (+ the model's files) with ``scope.classes``; returns the JSON path."""
    spec = resolve(model)
    scope = DifferentialScope.of(classes, spec.labels)
    out_dir, name = Path(out_dir), check_name(name or f"{spec.name}-scoped")
    replaced = earlier_lab_model(out_dir, name, source_json=spec.json_path, kind="scope")
    with staged(out_dir, name) as staging:
        _write(spec, scope, staging, name)
    if replaced is not None:
        log(f"replaced the earlier scoped model {name!r} (of {replaced['scope'].get('date', 'unknown date')})")
    log(f"{name}: counts {', '.join(scope.classes)}; cells first called {', '.join(scope.left_out(spec.labels)) or '-'} "
        "are flagged for review")
    log(f"wrote {out_dir / f'{name}.json'}")
    return out_dir / f"{name}.json"


def _copy(src: Path | None, dest: Path) -> str | None:
    if src is None:
        return None
    shutil.copyfile(src, dest)
    return dest.name


def _write(spec, scope: DifferentialScope, out: Path, name: str) -> None:
    # metrics and the float reference were measured without the scope
    data = {k: v for k, v in json.loads(json.dumps(spec.raw)).items() if k not in ("metrics", "float_reference")}
    data.update(name=name, file=_copy(spec.tflite_path, out / f"{name}.tflite"),
                display_name=f"{spec.display_name}, lab scope: {len(scope.classes)} classes")
    head = _copy(spec.head_path, out / f"{name}.head.npz")
    if head:
        data["cam"] = {**data.get("cam", {}), "head_file": head}
    ood = _copy(spec.ood_path, out / f"{name}.ood.npz")
    if ood:
        data["ood"] = {**data["ood"], "file": ood}
    morph = spec.morphology_reference
    if morph is not None and morph.exists():
        _copy(morph, out / morph.name)
    data["scope"] = {
        "classes": list(scope.classes),
        "flagged_when_first_choice_is": scope.left_out(spec.labels),
        "rule": RULE + " (hematovision/scope.py)",
        "source_model": {"name": spec.name, "sha256": spec.sha256, "json": str(spec.json_path)},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
