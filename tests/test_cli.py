import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import EXAMPLES, ROOT

#: The shipped model (no TensorFlow needed); the file-kind tests never reach the network.
MODEL = ROOT / "models" / "wbc.json"


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "hematovision", *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


@pytest.fixture
def images(tmp_path, disc):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for label in ("red", "green", "blue"):
        Image.fromarray(disc(label, seed=7)).save(folder / f"{label}.png")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


def test_classify_folder_json_lines(tiny_models, images, tmp_path):
    cams = tmp_path / "cams"
    r = cli("classify", "--model", tiny_models["tiny-int8"], "--cam-dir", cams, images)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["label"] for row in rows] == ["blue", "green", "red"]  # sorted file names
    for row in rows:
        assert set(row) == {"path", "label", "confidence", "probabilities", "uncertain", "out_of_distribution", "atypical", "outside_scope"}
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    pngs = sorted(cams.glob("*.png"))
    assert len(pngs) == 3 and Image.open(pngs[0]).size == (96, 96)


def test_bad_input_reported_and_run_continues(tiny_models, images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    r = cli("classify", "--model", tiny_models["tiny-float32"], bad, tmp_path / "missing.png", images / "red.png")
    assert r.returncode == 1
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert "error" in rows[0] and "\n" not in rows[0]["error"]
    assert "no such file" in rows[1]["error"]
    assert rows[2]["label"] == "red"
    assert "Traceback" not in r.stderr


def test_usage_errors_exit_2():
    assert cli().returncode == 2
    assert cli("classify").returncode == 2
    assert cli("frobnicate").returncode == 2


def test_missing_model_exit_1_with_instructions(tmp_path):
    r = cli("classify", "--model", tmp_path / "nope.tflite", tmp_path)
    assert r.returncode == 1 and "no such model file" in r.stderr and "Traceback" not in r.stderr


def test_help_documents_output():
    r = cli("classify", "--help")
    assert r.returncode == 0 and "JSON" in r.stdout and "--cam-dir" in r.stdout


def _empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def _no_images(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    return folder


def _folder_named_jpg(tmp_path):
    (tmp_path / "x.jpg").mkdir()
    return tmp_path / "x.jpg"


def _fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    return tmp_path / "pipe.jpg"


def _device(tmp_path):
    return Path("/dev/null")


def _symlink_loop(tmp_path):
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    return tmp_path / "loop.jpg"


#: kind -> (make the path, a phrase only its message has)
NOT_IMAGES = {
    "empty folder": (_empty_folder, "the folder is empty"),
    "folder without images": (_no_images, "no image files in this folder"),
    "folder named x.jpg": (_folder_named_jpg, "is a folder, not an image file"),
    "fifo": (_fifo, "named pipe (FIFO)"),
    "device": (_device, "character device"),
    "symlink loop": (_symlink_loop, "symbolic link loop"),
}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX file kinds")
@pytest.mark.parametrize("kind", sorted(NOT_IMAGES))
def test_each_kind_of_non_image_gets_its_own_row_and_exit_1(kind, tmp_path):
    make, phrase = NOT_IMAGES[kind]
    path = make(tmp_path)
    r = cli("classify", "--model", MODEL, "--workers", "1", path)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.returncode == 1, (kind, r.stdout, r.stderr)
    assert len(rows) == 1 and rows[0]["path"] == str(path) and set(rows[0]) == {"path", "error"}
    assert phrase in rows[0]["error"], rows[0]["error"]
    others = [p for k, (_, p) in NOT_IMAGES.items() if k != kind]
    assert not any(p in rows[0]["error"] for p in others)  # its own message
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX file kinds")
def test_special_files_inside_a_folder_are_rows_not_skipped(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(sorted((EXAMPLES / "wbc").glob("*.jpg"))[0], folder / "a_cell.jpg")
    os.mkfifo(folder / "b_pipe.png")
    (folder / "c_loop.jpg").symlink_to(folder / "c_loop.jpg")
    (folder / "d_dangling.jpg").symlink_to(folder / "gone.jpg")
    r = cli("classify", "--model", MODEL, "--workers", "2", folder)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.returncode == 1
    assert [Path(row["path"]).name for row in rows] == ["a_cell.jpg", "b_pipe.png", "c_loop.jpg", "d_dangling.jpg"]
    assert "label" in rows[0]
    assert "named pipe" in rows[1]["error"] and "link loop" in rows[2]["error"] and "broken symbolic link" in rows[3]["error"]


def test_cli_uses_the_core_image_suffixes():
    from hematovision.commands import _pool
    from hematovision.commands import classify
    from hematovision.images import IMAGE_SUFFIXES

    assert classify.IMAGE_SUFFIXES is IMAGE_SUFFIXES and _pool.IMAGE_SUFFIXES is IMAGE_SUFFIXES


# --------------------------------------------------------------------------- bad options: usage errors, --cam-dir


@pytest.mark.parametrize("command", [["classify"], ["archive", "--input", ".", "--output", "o.parquet"]])
@pytest.mark.parametrize("option,value", [("--threads", "0"), ("--threads", "-3"), ("--threads", "two"),
                                          ("--workers", "0")])
def test_threads_and_workers_below_one_are_usage_errors(command, option, value, tmp_path):
    r = cli(*command, "--model", MODEL, option, value, *(["x.png"] if command == ["classify"] else []))
    assert r.returncode == 2 and option in r.stderr and "cannot load model" not in r.stderr
    assert "Traceback" not in r.stderr


def a_file(tmp_path):
    (tmp_path / "afile").write_text("a plain file")
    return tmp_path / "afile"


def under_a_file(tmp_path):
    return a_file(tmp_path) / "cams"


@pytest.mark.parametrize("cam_dir,code,phrase", [
    (a_file, 2, "is a file, not a folder"),
    (under_a_file, 1, "cannot create"),
    (lambda tmp: Path("/proc/hematovision-no-such-folder"), 1, "cannot create"),
])
def test_a_cam_dir_that_cannot_be_a_folder_fails_before_any_work(cam_dir, code, phrase, tmp_path):
    if not MODEL.exists():
        pytest.skip("models/wbc.json not shipped")
    folder = cam_dir(tmp_path)
    if str(folder).startswith("/proc/") and not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    image = sorted((EXAMPLES / "wbc").glob("*.jpg"))[0]
    r = cli("classify", "--model", MODEL, "--workers", "1", "--cam-dir", folder, image)
    assert r.returncode == code and "error: --cam-dir: " in r.stderr and phrase in r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr  # nothing classified


def test_non_utf8_file_name_is_printed_and_gets_its_cam_overlay(tmp_path):
    """A non-UTF-8 name: valid JSON text (its bytes as \\xNN), and the overlay written (cv2.imwrite crashed)."""
    if not MODEL.exists():
        pytest.skip("models/wbc.json not shipped")
    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsdecode(b"\xffcell.png")
    try:
        shutil.copy(sorted((EXAMPLES / "wbc").glob("*.jpg"))[0], folder / name)
    except (OSError, UnicodeError) as exc:
        pytest.skip(f"this filesystem refuses a non-UTF-8 file name ({exc})")
    r = cli("classify", "--model", MODEL, "--workers", "1", "--cam-dir", tmp_path / "cams", folder)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["path"] == str(folder) + "/\\xffcell.png" and "\\udc" not in r.stdout
    assert os.listdir(os.fsencode(tmp_path / "cams")) == [b"00000_\xffcell_cam.png"]
