"""``classify --workers N``: a process pool, one classifier per worker; the same JSON lines in the same order."""

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ROOT
from tests.test_cli import cli

WBC = ROOT / "models" / "wbc.json"


@pytest.fixture
def mixed_folder(tmp_path):
    """Real PBC examples with bad files between them (sorted order interleaves them)."""
    if not WBC.exists():
        pytest.skip("models/wbc.json not shipped")
    folder = tmp_path / "mixed"
    folder.mkdir()
    for src in sorted((EXAMPLES / "wbc").glob("*.jpg")):
        shutil.copy(src, folder / src.name)
    (folder / "basophil__zz_truncated.jpg").write_bytes((EXAMPLES / "wbc" / sorted(p.name for p in (EXAMPLES / "wbc").glob("*.jpg"))[0]).read_bytes()[:300])
    (folder / "eosinophil__zz_empty.png").write_bytes(b"")
    (folder / "lymphocyte__zz_text.jpg").write_text("not an image")
    return folder


def rows(r):
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_workers_1_and_2_print_identical_lines(mixed_folder, tmp_path):
    one = cli("classify", "--model", WBC, "--workers", "1", mixed_folder)
    two = cli("classify", "--model", WBC, "--workers", "2", mixed_folder)
    assert one.returncode == two.returncode == 1  # the bad files fail, the run goes on
    assert one.stdout == two.stdout  # byte for byte: order, labels, probabilities, error rows
    out = rows(two)
    assert len(out) == len(list(mixed_folder.iterdir()))
    assert [r["path"] for r in out] == sorted(str(p) for p in mixed_folder.iterdir())
    errors = [r for r in out if "error" in r]
    assert len(errors) == 3 and all("\n" not in r["error"] for r in errors)
    assert "Traceback" not in two.stderr


def test_workers_write_the_same_cam_overlays(mixed_folder, tmp_path):
    a, b = tmp_path / "cam1", tmp_path / "cam2"
    r1 = cli("classify", "--model", WBC, "--workers", "1", "--cam-dir", a, mixed_folder)
    r2 = cli("classify", "--model", WBC, "--workers", "2", "--cam-dir", b, mixed_folder)
    assert r1.stdout == r2.stdout
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and len(names) == len(rows(r1)) - 3
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def test_more_workers_than_files(mixed_folder):
    one_file = sorted(mixed_folder.glob("*.jpg"))[0]
    r = cli("classify", "--model", WBC, "--workers", "4", one_file)
    assert r.returncode == 0 and len(rows(r)) == 1


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_workers_must_be_a_positive_number(bad, tmp_path):
    r = cli("classify", "--workers", bad, tmp_path)
    assert r.returncode == 2 and "--workers" in r.stderr


def test_scaling_benchmark_compares_outputs(mixed_folder):
    pytest.importorskip("pyarrow")
    from bench import scaling
    from bench.report import to_jsonable

    sources = [p for p in sorted(mixed_folder.glob("*.jpg")) if "__zz_" not in p.name][:6]
    rep = scaling.run(str(WBC), sources, n=12, workers=(1, 2), engines=("local",), repeats=1)
    assert [(r.tool, r.workers) for r in rep.runs] == [("classify", 1), ("classify", 2), ("classify, default threads", 1),
                                                       ("archive-local", 1), ("archive-local", 2)]
    assert rep.identical_output and set(rep.speedups) == {"classify 2/1", "archive-local 2/1"}
    assert all(r.run.classified == 12 for r in rep.runs[:3]) and all(r.rows == 12 for r in rep.runs[3:])
    assert "| 2 |" in "\n".join(scaling.markdown(to_jsonable(rep)))


@pytest.mark.parametrize("threads, workers, cores, expected", [(None, 1, 2, 2), (None, 2, 2, 1), (None, 3, 2, 1),
                                                               (None, 2, 8, 4), (3, 2, 8, 3), (1, 1, 2, 1)])
def test_threads_are_the_cores_shared_out_over_the_workers(monkeypatch, threads, workers, cores, expected):
    from hematovision import runtime

    monkeypatch.setattr(runtime, "available_cores", lambda: cores)
    assert runtime.threads_per_worker(threads, workers) == expected


def test_load_model_uses_every_core_by_default(tiny_models):
    import hematovision
    from hematovision.runtime import available_cores

    assert hematovision.load_model(tiny_models["tiny-int8"]).model.num_threads == available_cores()
    assert hematovision.load_model(tiny_models["tiny-int8"], num_threads=1).model.num_threads == 1


def test_a_forked_worker_takes_the_parents_classifier_instead_of_loading_one():
    """_init_worker uses the inherited classifier (set before the fork) and never touches the model name."""
    from hematovision.commands import _pool

    sentinel = object()
    _pool._WORKER["inherited"] = sentinel
    try:
        _pool._init_worker("no-such-model-anywhere", 1)
        assert _pool._WORKER["clf"] is sentinel and "inherited" not in _pool._WORKER
    finally:
        _pool._WORKER.clear()


def test_every_archive_repeat_starts_from_an_empty_output(tmp_path, monkeypatch):
    """A repeat must classify every file again: archive resumes (skips done files) when its output exists."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench import scaling

    seen = []

    def fake_run_cli(args, **kwargs):
        output = Path(args[args.index("--output") + 1])
        seen.append(output.exists())
        output.mkdir()  # what archive leaves: a folder of parquet parts
        pq.write_table(pa.table({"path": ["a.jpg"]}), output / "part-0.parquet")
        return scaling.CliRun("archive", "archive", 1, 1, 0, 0, 1.0, 1.0, False)

    monkeypatch.setattr(scaling, "run_cli", fake_run_cli)
    for _ in range(3):
        assert scaling._archive("wbc", tmp_path, 1, 1, "local", tmp_path).rows == 1
    assert seen == [False, False, False]
