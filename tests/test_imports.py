"""The edge core must not pull in the heavy stacks (the Pi has none of them)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("tensorflow", "keras", "gradio", "open3d", "huggingface_hub", "skimage", "matplotlib", "torch")


@pytest.mark.parametrize("module", ["hematovision", "hematovision.classifier", "hematovision.__main__",
                                    "hematovision.morphology", "hematovision.mesh", "hematovision.camera", "hematovision.station"])
def test_core_imports_stay_light(module):
    code = (f"import importlib, json, sys; importlib.import_module({module!r}); "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    if r.returncode != 0 and "No module named 'hematovision." in r.stderr:
        pytest.skip(f"{module} not built yet")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
