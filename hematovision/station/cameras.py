"""Frame sources read through a device driver: OpenCV (a USB camera or a video file) and Picamera2 (a Pi camera).

Both are :class:`~hematovision.station.frames.FrameSource` objects; :mod:`hematovision.station.sources`
re-exports them and builds them from ``camera:INDEX``, ``video:FILE`` and ``picamera[:INDEX]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import SourceError
from .frames import Frame, FrameSource


class OpenCVSource(FrameSource):
    """A USB camera (``int`` index) or a video file (path) through ``cv2.VideoCapture``.

    A camera that stops delivering frames ``max_failures`` reads in a row raises
    :class:`SourceError` (unplugged); a video file simply ends.
    """

    def __init__(self, device: int | str | os.PathLike, *, width: int | None = None, height: int | None = None,
                 max_failures: int = 30):
        super().__init__()
        self.device = device if isinstance(device, int) else Path(device)
        self.is_camera = isinstance(device, int)
        self.description = f"camera:{device}" if self.is_camera else f"video:{Path(device).name}"
        self.size = (width, height)
        self.max_failures = max_failures
        self._cap = None
        self._first = None  # a video's first frame, read by open()
        self._failures = 0

    def open(self) -> None:
        if not self.is_camera and not self.device.is_file():
            raise SourceError(f"{self.device}: no such video file; check the path given to video:FILE.")
        cap = cv2.VideoCapture(self.device if self.is_camera else str(self.device))
        if not cap.isOpened():
            cap.release()
            if self.is_camera:
                raise SourceError(f"cannot open camera {self.device}; check the cable and `ls /dev/video*`, "
                                  "try another index, and that the user is in the 'video' group.")
            raise SourceError(f"{self.device}: OpenCV cannot decode this video; convert it to MP4 (H.264) or MJPEG AVI.")
        if not self.is_camera:
            self._first = self._first_frame(cap)
        if self.is_camera:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not one queued while we classified
        width, height = self.size
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._cap = cap

    def _first_frame(self, cap):
        """The video's first frame, read at open: a file OpenCV opens but decodes no frame from is refused here."""
        try:
            ok, bgr = cap.read()
        except cv2.error as exc:
            ok, bgr = False, exc
        if not ok or bgr is None or getattr(bgr, "size", 0) == 0:
            cap.release()
            raise SourceError(f"{self.device}: OpenCV cannot decode this video (no frame could be read); convert it to MP4 "
                              "(H.264) or MJPEG AVI.")
        return bgr

    def _truncation_note(self) -> str:
        """A video whose container declares more frames than could be decoded was cut short (an interrupted copy
        or recording): the run ends at the cut, and the note says so instead of passing for the whole file."""
        declared = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        # Some containers only estimate the count (duration x frame rate), so a frame or 1 % short is not a cut.
        # The comparison is also False for NaN or -1 (a container that declares no count).
        if not (declared - self._count > max(1.0, 0.01 * declared)):
            return ""
        return (f"{self.device.name}: the file declares {int(declared)} frames but only {self._count} could be decoded; "
                "it is probably truncated (an interrupted copy or recording). Check the file and copy it again.")

    def close(self) -> None:
        self._first = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def read(self, *, timeout: float | None = None) -> Frame | None:
        if self._ended:
            return None
        if self._cap is None:
            raise SourceError(f"{self.description} is not open; use it in a `with` block.")
        if self._first is not None:
            ok, bgr, self._first = True, self._first, None
        else:
            ok, bgr = self._cap.read()
        if not ok or bgr is None:
            if not self.is_camera:
                self._ended = True
                self._end_note = self._truncation_note()
                return None
            self._failures += 1
            if self._failures >= self.max_failures:
                raise SourceError(f"camera {self.device} gave no frame {self._failures} times in a row; "
                                  "it was unplugged or is used by another program.")
            return None
        self._failures = 0
        return self._frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


class PicameraSource(FrameSource):
    """A Raspberry Pi camera module through Picamera2 (``sudo apt install python3-picamera2``).

    Picamera2 is imported in :meth:`open`, so this class costs nothing where it
    is not used. Picamera2's ``"RGB888"`` format is stored B, G, R per pixel
    (OpenCV order); it is converted to RGB here.
    """

    def __init__(self, *, camera_index: int = 0, width: int = 640, height: int = 480):
        super().__init__()
        self.camera_index = camera_index
        self.size = (width, height)
        self.description = f"picamera:{self.camera_index}"
        self._cam = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError(
                "picamera2 is not installed; on Raspberry Pi OS run `sudo apt install python3-picamera2` and create "
                "the venv with `--system-site-packages` (see deploy/raspberry-pi.md), or use a USB camera (camera:0)."
            ) from exc
        except ValueError as exc:  # "numpy.dtype size changed": apt's simplejpeg is built for numpy 1.x
            raise SourceError(
                f"picamera2 cannot be imported with this numpy ({exc}); in the venv run "
                "`pip install --force-reinstall simplejpeg` (see deploy/raspberry-pi.md)."
            ) from exc
        try:
            cam = Picamera2(self.camera_index)
            cam.configure(cam.create_video_configuration(main={"size": self.size, "format": "RGB888"}))
            cam.start()
        except (RuntimeError, IndexError, OSError) as exc:
            raise SourceError(f"cannot start the Pi camera {self.camera_index} ({exc}); check the ribbon cable and "
                              "`rpicam-hello --list-cameras`.") from exc
        self._cam = cam

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
            finally:
                self._cam.close()
                self._cam = None

    def read(self, *, timeout: float | None = None) -> Frame | None:
        if self._cam is None:
            raise SourceError(f"{self.description} is not open; use it in a `with` block.")
        try:
            bgr = self._cam.capture_array("main")
        except (RuntimeError, OSError) as exc:
            raise SourceError(f"the Pi camera stopped delivering frames ({exc}).") from exc
        return self._frame(np.ascontiguousarray(bgr[:, :, 2::-1]))
