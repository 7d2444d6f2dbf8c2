"""The shape the team agreed on: short modules in the core, short functions everywhere outside tests."""

import ast

import pytest

from tests.conftest import ROOT

MAX_MODULE_LINES = 350  # hematovision/ only
MAX_FUNCTION_LINES = 60
PRODUCT_DIRS = ("hematovision", "training", "export", "bench")


def _product_files():
    files = [ROOT / "app.py"]
    for d in PRODUCT_DIRS:
        files += sorted((ROOT / d).rglob("*.py"))
    return files


def _long_functions(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


@pytest.mark.parametrize("path", sorted((ROOT / "hematovision").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_modules_stay_short(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it by concept"


@pytest.mark.parametrize("path", _product_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_stay_short(path):
    assert _long_functions(path) == [], f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines"


def test_the_shape_check_can_fail(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n")
    assert _long_functions(tmp_path / "long.py") == [("long", MAX_FUNCTION_LINES + 2)]
