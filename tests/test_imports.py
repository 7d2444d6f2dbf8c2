"""The edge core must not pull in the heavy stacks (the Pi has none of them)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("tensorflow", "keras", "gradio", "open3d", "huggingface_hub", "skimage", "matplotlib", "torch")


def _core_modules() -> list[str]:
    """Every module of the package but the web app's (which is Gradio by design), found by walking the tree."""
    pkg = ROOT / "hematovision"
    names = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if "web" not in parts:
            names.append(".".join(parts))
    return names


def test_core_imports_stay_light():
    """Import every core module, one after another, in one fresh interpreter; name the first that pulls a heavy stack."""
    modules = _core_modules()
    assert len(modules) > 40 and "hematovision.cells.morphology" in modules and "hematovision.station.loop" in modules
    code = (f"import importlib, json, sys\n"
            f"for name in {modules!r}:\n"
            f"    importlib.import_module(name)\n"
            f"    heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
            f"    if heavy:\n"
            f"        print(json.dumps([name, heavy])); break\n"
            f"else:\n"
            f"    print(json.dumps([]))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
