"""Frame sources: fake, folder watcher, OpenCV video/camera, Picamera2 (faked), and the --source parser."""

import json
import os
import subprocess
import sys
import time
import types

import cv2
import numpy as np
import pytest
from PIL import Image

from hematovision.station.sources import FakeSource, FolderSource, OpenCVSource, PicameraSource, open_source
from hematovision.errors import SourceError, SourceSpecError
from tests.conftest import ROOT


def drain(source, timeout=0.05, limit=100):
    frames = []
    for _ in range(limit):
        frame = source.read(timeout=timeout)
        if frame is None:
            if source.ended:
                break
            continue
        frames.append(frame)
    return frames


def solid(rgb, size=(40, 60)):
    return np.full((*size, 3), rgb, np.uint8)


def test_fake_source_yields_rgb_frames_then_ends():
    with FakeSource([solid((255, 0, 0)), solid((0, 0, 255))], names=["a", "b"]) as src:
        frames = drain(src)
        assert src.ended and src.read() is None
    assert [f.index for f in frames] == [0, 1] and [f.name for f in frames] == ["a", "b"]
    assert frames[0].image.dtype == np.uint8 and tuple(frames[0].image[0, 0]) == (255, 0, 0)


def save(path, rgb, *, age=10.0):
    Image.fromarray(rgb).save(path)
    t = time.time() - age
    os.utime(path, (t, t))


def test_folder_reads_existing_files_oldest_first_and_skips_non_images(tmp_path):
    save(tmp_path / "b.png", solid((0, 255, 0)), age=20)
    save(tmp_path / "a.png", solid((255, 0, 0)), age=10)
    (tmp_path / "notes.txt").write_text("not an image")
    save(tmp_path / ".hidden.png", solid((0, 0, 0)))
    with FolderSource(tmp_path, watch=False) as src:
        frames = drain(src)
    assert [f.name for f in frames] == ["b.png", "a.png"] and src.ended


def test_folder_watcher_picks_up_new_files_once_they_settle(tmp_path):
    with FolderSource(tmp_path, settle=0.3, poll_interval=0.02) as src:
        assert src.read(timeout=0.05) is None and not src.ended
        save(tmp_path / "new.png", solid((0, 0, 255)), age=0)
        t0 = time.monotonic()
        frame = src.read(timeout=5)
        assert frame is not None and frame.name == "new.png"
        assert time.monotonic() - t0 >= 0.2  # waited for the file to stop changing
        assert src.read(timeout=0.1) is None  # each file once


def test_folder_skips_a_corrupt_file_and_goes_on(tmp_path, caplog):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    os.utime(tmp_path / "bad.png", (time.time() - 30,) * 2)
    save(tmp_path / "good.png", solid((9, 9, 9)))
    with caplog.at_level("WARNING"), FolderSource(tmp_path, watch=False) as src:
        frames = drain(src)
    assert [f.name for f in frames] == ["good.png"]
    assert src.skipped and src.skipped[0][0] == "bad.png" and "bad.png" in caplog.text


def test_missing_folder_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="not a folder"):
        FolderSource(tmp_path / "nope").open()


def test_video_file_frames_are_rgb_and_the_video_ends(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for _ in range(5):
        writer.write(np.full((48, 64, 3), (0, 0, 220), np.uint8))  # BGR: red
    writer.release()
    with open_source(f"video:{path}") as src:
        frames = drain(src)
    assert len(frames) == 5 and src.ended
    r, g, b = frames[0].image[24, 32]
    assert r > 180 and g < 60 and b < 60
    assert frames[0].name.startswith("video:clip.avi#")


def test_missing_video_and_camera_are_source_errors(tmp_path):
    with pytest.raises(SourceError, match="no such video"):
        OpenCVSource(tmp_path / "none.mp4").open()
    with pytest.raises(SourceError, match="cannot open camera 97"):
        OpenCVSource(97).open()


def test_picamera_without_picamera2_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes the import fail
    with pytest.raises(SourceError, match="apt install python3-picamera2"):
        PicameraSource().open()


def test_picamera_frames_are_converted_from_bgr(monkeypatch):
    calls = []

    class FakePicamera2:
        def __init__(self, index):
            calls.append(("init", index))

        def create_video_configuration(self, main):
            return {"main": main}

        def configure(self, config):
            calls.append(("configure", config["main"]["size"], config["main"]["format"]))

        def start(self):
            calls.append("start")

        def capture_array(self, name):
            return np.full((480, 640, 3), (10, 20, 200), np.uint8)  # B, G, R

        def stop(self):
            calls.append("stop")

        def close(self):
            calls.append("close")

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    with open_source("picamera") as src:
        frame = src.read()
    assert tuple(frame.image[0, 0]) == (200, 20, 10) and frame.image.flags["C_CONTIGUOUS"]
    assert calls == [("init", 0), ("configure", (640, 480), "RGB888"), "start", "stop", "close"]


def test_camera_module_does_not_import_picamera2():
    code = "import sys, json, hematovision.station.sources; print(json.dumps('picamera2' in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout) is False


@pytest.mark.parametrize("spec, kind", [("camera:0", OpenCVSource), ("picamera", PicameraSource), ("picamera:1", PicameraSource),
                                         ("folder:/tmp/x", FolderSource), ("video:a.mp4", OpenCVSource)])
def test_open_source_parses_every_form(spec, kind):
    assert isinstance(open_source(spec), kind)


@pytest.mark.parametrize("spec", ["webcam", "camera:", "camera:front", "folder:", "video:", "picamera:x"])
def test_open_source_refuses_malformed_specs(spec):
    with pytest.raises(SourceSpecError, match="camera:|picamera"):
        open_source(spec)
