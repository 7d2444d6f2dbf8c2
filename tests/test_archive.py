"""``archive``: a folder tree -> a Parquet dataset, with the local pool or Ray Data; resumable."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import EXAMPLES, ROOT

pa = pytest.importorskip("pyarrow", reason="archive needs pyarrow (pip install .[scale])")
pq = pytest.importorskip("pyarrow.parquet")

from hematovision.commands._parquet import ArchiveError  # noqa: E402
from hematovision.commands.archive import ArchiveOptions, archive  # noqa: E402

WBC = ROOT / "models" / "wbc.json"
COLUMNS = ["path", "label", "confidence", "probabilities", "uncertain", "ood", "ood_score", "model", "model_sha256", "error"]


def make_tree(root, n):
    """``n`` copies of the PBC examples (a fifth in a subfolder) and two bad files; returns (root, bad paths)."""
    if not WBC.exists():
        pytest.skip("models/wbc.json not shipped")
    sources = sorted((EXAMPLES / "wbc").glob("*.jpg"))
    (root / "sub").mkdir(parents=True)
    for i in range(n):
        src = sources[i % len(sources)]
        shutil.copy(src, root / ("sub" if i % 5 == 0 else "") / f"{i:04d}_{src.name}")
    bad = [root / "0003_truncated.jpg", root / "sub" / "0007_text.png"]
    bad[0].write_bytes(sources[0].read_bytes()[:400])
    bad[1].write_text("not an image")
    return root, [str(p) for p in bad]


def read_rows(output):
    return {r["path"]: r for r in pq.read_table(output).to_pylist()}


def classify_labels(*folders):
    r = subprocess.run([sys.executable, "-m", "hematovision", "classify", "--model", str(WBC), "--workers", "2",
                        *map(str, folders)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    return {row["path"]: row.get("label") for row in map(json.loads, r.stdout.splitlines())}


def check_against_classify(rows, root, bad):
    assert set(rows) == set(classify_labels(root, root / "sub"))
    assert {p: r["label"] for p, r in rows.items()} == classify_labels(root, root / "sub")
    errors = [p for p, r in rows.items() if r["error"] is not None]
    assert sorted(errors) == sorted(bad)  # one error row per bad file, none for a good one
    assert all(rows[p]["label"] is None and "\n" not in rows[p]["error"] for p in bad)
    good = [r for r in rows.values() if r["error"] is None]
    assert all(abs(sum(v for _, v in r["probabilities"]) - 1) < 1e-6 and r["model"] == "wbc" for r in good)


def test_local_engine_rows_resume_and_new_files(tmp_path):
    root, bad = make_tree(tmp_path / "slides", 40)
    out = tmp_path / "out.parquet"
    first = archive(ArchiveOptions(input=root, output=out, model=str(WBC), workers=2, rows_per_file=16))
    assert (first.found, first.skipped, first.written, first.errors) == (42, 0, 42, 2)
    assert pq.read_schema(next(out.glob("*.parquet"))).names == COLUMNS
    rows = read_rows(out)
    check_against_classify(rows, root, bad)
    parts = sorted(out.iterdir())
    assert len(parts) == 3 and not any(p.name.startswith(".") for p in parts)  # 16 + 16 + 10 rows, no temp files left

    again = archive(ArchiveOptions(input=root, output=out, model=str(WBC), workers=2))
    assert (again.skipped, again.written, again.earlier_errors) == (42, 0, 2)
    assert sorted(out.iterdir()) == parts  # nothing re-classified, nothing written

    shutil.copy(next(root.glob("0001_*")), root / "new_cell.jpg")
    more = archive(ArchiveOptions(input=root, output=out, model=str(WBC), workers=1))
    assert (more.skipped, more.written, more.errors) == (42, 1, 0)
    assert len(read_rows(out)) == 43


def test_cli_exit_status_and_refusals(tmp_path):
    root, _ = make_tree(tmp_path / "slides", 6)
    out = tmp_path / "o.parquet"
    cmd = [sys.executable, "-m", "hematovision", "archive", "--model", str(WBC), "--workers", "2"]
    r = subprocess.run([*cmd, "--input", root, "--output", out], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 1 and "8 written (2 errors)" in r.stderr and "Traceback" not in r.stderr
    (root / "0003_truncated.jpg").unlink()
    (root / "sub" / "0007_text.png").unlink()
    ok = subprocess.run([*cmd, "--input", root, "--output", tmp_path / "fresh.parquet"], capture_output=True, text=True,
                        cwd=ROOT, timeout=300)
    assert ok.returncode == 0, ok.stderr
    for args, phrase in (([*cmd, "--input", tmp_path / "nope", "--output", out], "not a folder"),
                         ([*cmd, "--input", root, "--output", out, "--address", "x:1"], "--engine ray")):
        r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert r.returncode in (1, 2) and phrase in r.stderr and "Traceback" not in r.stderr


def test_refuses_an_output_of_another_model_or_a_file(tmp_path):
    root, _ = make_tree(tmp_path / "slides", 3)
    out = tmp_path / "out.parquet"
    archive(ArchiveOptions(input=root, output=out, model=str(WBC), workers=1))
    with pytest.raises(ArchiveError, match="holds results of model 'wbc'"):
        archive(ArchiveOptions(input=root, output=out, model=str(ROOT / "models" / "all.json"), workers=1))
    (tmp_path / "file.parquet").write_bytes(b"PAR1")
    with pytest.raises(ArchiveError, match="is a file"):
        archive(ArchiveOptions(input=root, output=tmp_path / "file.parquet", model=str(WBC), workers=1))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArchiveError, match="the folder is empty"):
        archive(ArchiveOptions(input=empty, output=tmp_path / "e.parquet", model=str(WBC), workers=1))


def test_unreadable_part_file_is_set_aside_and_redone(tmp_path):
    root, _ = make_tree(tmp_path / "slides", 4)
    out = tmp_path / "out.parquet"
    archive(ArchiveOptions(input=root, output=out, model=str(WBC), workers=1))
    part = next(out.glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:100])  # a crash mid-write by another tool
    redo = archive(ArchiveOptions(input=root, output=out, model=str(WBC), workers=1))
    assert redo.written == 6 and (out / f"_unreadable-{part.name}").exists()
    assert len(read_rows(out)) == 6


def test_missing_extras_say_how_to_install(monkeypatch):
    from hematovision.commands import _parquet
    from hematovision.commands import _ray
    from hematovision.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"pip install \.\[scale\]"):
        _ray.run_ray(["x.jpg"], output=ROOT, spec=None, model=None)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingDependencyError, match=r"pip install \.\[scale\]"):
        _parquet.pyarrow()


def test_the_command_imports_neither_ray_nor_pyarrow():
    code = ("import sys, hematovision.__main__ as m; m.build_parser(); "
            "print(sorted({'ray', 'pyarrow'} & {k.split('.')[0] for k in sys.modules}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="the Ray engine needs `pip install .[scale]`")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


#: Images of the Ray check; HV_ARCHIVE_RAY_IMAGES=2000 is issue 15's full-size run (CI runs 200).
RAY_IMAGES = int(os.environ.get("HV_ARCHIVE_RAY_IMAGES", "200"))


@pytest.mark.slow
def test_ray_engine_same_labels_as_classify_and_resumes(local_ray, tmp_path):
    root, bad = make_tree(tmp_path / "slides", RAY_IMAGES)
    files = RAY_IMAGES + 2
    out = tmp_path / "ray.parquet"
    first = archive(ArchiveOptions(input=root, output=out, model=str(WBC), engine="ray", workers=2))
    assert (first.found, first.written, first.errors, first.workers) == (files, files, 2, 2)
    rows = read_rows(out)
    assert len(rows) == files and pq.read_table(out).num_rows == files  # one row per file
    check_against_classify(rows, root, bad)
    parts = sorted(out.iterdir())

    again = archive(ArchiveOptions(input=root, output=out, model=str(WBC), engine="ray", workers=2))
    assert (again.skipped, again.written) == (files, 0) and sorted(out.iterdir()) == parts  # nothing re-classified

    shutil.copy(next(root.glob("0001_*")), root / "sub" / "late.jpg")
    more = archive(ArchiveOptions(input=root, output=out, model=str(WBC), engine="ray", workers=2))
    assert (more.skipped, more.written, more.errors) == (files, 1, 0)
    assert pq.read_table(out).num_rows == files + 1


# --------------------------------------------------------------------------- bad input: names, cluster addresses


def non_utf8_folder(root, names=(b"\xff.png", b"caf\xe9.png")):
    """The PBC examples under non-UTF-8 byte names plus one plain name; skips where the filesystem refuses them."""
    if not WBC.exists():
        pytest.skip("models/wbc.json not shipped")
    root.mkdir()
    src = sorted((EXAMPLES / "wbc").glob("*.jpg"))[0].read_bytes()
    for raw in names:
        try:
            (root / os.fsdecode(raw)).write_bytes(src)
        except (OSError, UnicodeError) as exc:
            pytest.skip(f"this filesystem refuses a non-UTF-8 file name ({exc})")
    (root / "plain.png").write_bytes(src)
    return root


@pytest.mark.parametrize("raw", [b"\xff.png", b"caf\xe9.png", b"a\x80\x81b.png"])
def test_non_utf8_file_names_are_stored_and_resumed(tmp_path, raw):
    root = non_utf8_folder(tmp_path / "slides", names=(raw,))
    out = tmp_path / "out.parquet"
    first = archive(ArchiveOptions(input=root, output=out, model=str(WBC), workers=1))
    assert (first.found, first.written, first.errors) == (2, 2, 0)
    shown = os.fsencode(root / os.fsdecode(raw)).decode("utf-8", "backslashreplace")
    rows = read_rows(out)
    assert set(rows) == {shown, str(root / "plain.png")} and rows[shown]["label"] is not None
    again = archive(ArchiveOptions(input=root, output=out, model=str(WBC), workers=1))
    assert (again.skipped, again.written) == (2, 0)  # the stored name is recognised: nothing classified twice


def test_non_utf8_names_go_local_with_the_ray_engine(tmp_path, monkeypatch):
    """Ray cannot read a non-UTF-8 name: such files are classified in this process, the rest on Ray."""
    from hematovision.commands import _ray

    root = non_utf8_folder(tmp_path / "slides")
    sent = []
    monkeypatch.setattr(_ray, "run_ray", lambda paths, **kw: sent.extend(paths) or 1)
    out = tmp_path / "out.parquet"
    result = archive(ArchiveOptions(input=root, output=out, model=str(WBC), engine="ray"))
    assert sent == [str(root / "plain.png")]
    assert result.written == 2 and result.errors == 0 and len(read_rows(out)) == 2


def closed_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _refuse(*args, **kwargs):
    raise ConnectionRefusedError(111, "Connection refused")


def _time_out(*args, **kwargs):
    raise TimeoutError("timed out")


def _no_such_host(*args, **kwargs):
    import socket

    raise socket.gaierror(-2, "Name or service not known")


@pytest.mark.parametrize("address,connect,phrase", [
    (None, None, "cannot reach the Ray cluster at 127.0.0.1:"),  # a closed local port, really connected to
    ("ray://127.0.0.1:1", _refuse, "Connection refused"),
    ("bogus:1", _no_such_host, "Name or service not known"),
    ("10.255.255.1:6379", _time_out, "timed out"),
    ("head:abc", None, "not a Ray cluster address"),
    ("http://head:6379", None, "not a Ray cluster address"),
])
def test_an_unreachable_ray_address_fails_fast(address, connect, phrase, monkeypatch):
    """``ray.init`` retries an unreachable address forever: the address is checked first, Ray never started."""
    import socket
    import types

    from hematovision.commands import _ray

    def no_init(**kwargs):
        raise AssertionError("ray.init was called")

    fake = types.SimpleNamespace(is_initialized=lambda: False, init=no_init)
    monkeypatch.setitem(sys.modules, "ray", fake)
    timeouts = []
    if connect is not None:
        monkeypatch.setattr(socket, "create_connection", lambda addr, timeout: timeouts.append(timeout) or connect())
    address = address or closed_port()
    with pytest.raises(ArchiveError, match=phrase) as info:
        _ray.run_ray(["x.jpg"], output=ROOT, spec=None, model=None, address=address)
    assert "ray start --head" in str(info.value) or "ray://HOST" in str(info.value)
    assert all(t <= 10 for t in timeouts)


def test_cli_unreachable_ray_address_exit_1_before_any_work(tmp_path):
    (tmp_path / "in").mkdir()
    out = tmp_path / "out.parquet"
    r = subprocess.run([sys.executable, "-m", "hematovision", "archive", "--input", tmp_path / "in", "--output", out,
                        "--engine", "ray", "--address", closed_port()], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 1 and "cannot reach the Ray cluster" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
