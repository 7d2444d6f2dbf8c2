"""The training and export tools report a missing data folder as one ``error:`` line and exit 2, never a traceback."""

import subprocess
import sys

import pytest

from hematovision.commands import run_tool
from hematovision.errors import InvalidImageError
from tests.conftest import ROOT


def exits_with(main):
    with pytest.raises(SystemExit) as exc:
        run_tool(main)
    return exc.value.code


@pytest.mark.parametrize("error", [FileNotFoundError("/x/splits.csv not found; --data must point at ..."),
                                   InvalidImageError("x.png is not an image; ...")])
def test_a_usage_problem_is_one_line_and_status_2(capsys, error):
    def main():
        raise error

    assert exits_with(main) == 2
    assert capsys.readouterr().err == f"error: {error}\n"


@pytest.mark.parametrize("status", [0, 1])
def test_the_tools_own_status_is_kept(status):
    assert exits_with(lambda: status) == status


def test_a_bug_keeps_its_traceback():
    def main():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_tool(main)


@pytest.mark.parametrize("argv", [
    ["training.robustness", "--model", "models/wbc.json", "--data", "{missing}", "--out", "{out}"],
    ["training.fewshot", "--model", "models/wbc.json", "--cells", "{missing}", "--out", "{out}"],
    ["training.crosslab", "--model", "models/wbc.json", "--labelled", "{missing}", "--out", "{out}"],
    ["training.amplitude_pool", "--images", "{missing}", "--out", "{out}"],
    ["training.cytoplasm_colour", "--pbc", "{missing}", "--cells", "{missing}", "--classes", "neutrophil", "--out", "{out}"],
])
def test_a_missing_data_folder_through_the_real_tools(tmp_path, argv):
    argv = [a.format(missing=tmp_path / "missing", out=tmp_path / "r.json") for a in argv]
    r = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "missing" in r.stderr.splitlines()[-1]
    assert not (tmp_path / "r.json").exists()
