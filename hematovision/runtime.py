"""TFLite runtime: LiteRT first, then tflite-runtime, then TensorFlow Lite.

Quantized tensors follow TFLite's affine scheme, real = scale * (q - zero_point):
inputs are quantized with the input tensor's own (scale, zero_point) and
outputs dequantized with theirs, so float, int8 and uint8 models are used alike.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .errors import ModelFormatError, RuntimeNotAvailableError


def interpreter_class():
    """Return ``(Interpreter class, runtime name)`` of the first runtime installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:  # the old name, for 32-bit Raspberry Pi OS where LiteRT has no wheel
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return tf.lite.Interpreter, "tensorflow"
    except ImportError:
        pass
    raise RuntimeNotAvailableError(
        "no TFLite runtime found; install one with `pip install ai-edge-litert` "
        "(or tflite-runtime on 32-bit Raspberry Pi OS)."
    )


def available_cores() -> int:
    """Every core this process may run on (its CPU affinity), at least 1."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_worker(threads: int | None, workers: int) -> int:
    """Interpreter threads for each of ``workers`` processes: ``threads`` when given, else the cores shared out."""
    return threads if threads is not None else max(1, available_cores() // max(1, workers))


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """float -> the tensor's dtype: q = round(x / scale) + zero_point, clipped to the dtype's range.

    An integer array already in the tensor's dtype is taken as quantized and passed through.
    """
    dtype = detail["dtype"]
    scale, zero_point = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and x.dtype == dtype:
        return x  # already quantized (preprocessing.prepare_quantized)
    if not scale or not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    """the tensor's dtype -> float32: real = scale * (q - zero_point)."""
    scale, zero_point = detail["quantization"]
    if not scale or not np.issubdtype(q.dtype, np.integer):
        return q.astype(np.float32)
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


class TFLiteModel:
    """One loaded .tflite model; :meth:`run` takes and returns float32 arrays.

    :meth:`run_batch` runs several inputs in one invoke (the test-time augmentation views).
    A TFLite interpreter is not thread-safe, so calls are serialised by a lock.
    """

    def __init__(self, path: str | Path, *, num_threads: int | None = None):
        path = Path(path)
        with open(path, "rb") as fh:
            header = fh.read(8)
        if len(header) < 8 or header[4:8] != b"TFL3":
            raise ModelFormatError(f"{path}: not a TFLite model (no TFL3 identifier); re-download or re-export it.")
        cls, self.runtime_name = interpreter_class()
        try:
            self._interpreter = cls(model_path=str(path), num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFormatError(f"{path}: the TFLite runtime could not load it ({exc}).") from exc
        self.input_detail = self._interpreter.get_input_details()[0]
        self.output_details = self._interpreter.get_output_details()
        self.path, self._cls, self._num_threads = path, cls, num_threads
        self._batched: dict[int, object] = {}  # batch size -> an interpreter resized to it (made once, kept)
        self._lock = threading.Lock()

    @property
    def num_threads(self) -> int:
        """Interpreter threads (LiteRT's default, 1, when none were asked for)."""
        return self._num_threads or 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.input_detail["shape"])

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(int(v) for v in d["shape"]) for d in self.output_details]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run one batch (shape = the model's input shape); every output dequantized to float32."""
        if tuple(x.shape) != self.input_shape:
            raise ValueError(f"input shape {x.shape} does not match the model's {self.input_shape}")
        with self._lock:
            return self._invoke(self._interpreter, x)

    def run_batch(self, x: np.ndarray) -> list[np.ndarray]:
        """Run ``n`` inputs stacked on axis 0 in ONE invoke; the outputs are those of ``n`` :meth:`run` calls, stacked.

        The first call for a batch size makes a second interpreter of the same file, resized to it
        (``resize_tensor_input`` + ``allocate_tensors``), and keeps it: later calls only invoke.
        Raises :class:`ModelFormatError` when the model cannot take that batch size.
        """
        if x.ndim != len(self.input_shape) or x.shape[0] < 1 or tuple(x.shape[1:]) != self.input_shape[1:]:
            raise ValueError(f"input shape {x.shape} is not a batch of the model's {self.input_shape[1:]}")
        n = int(x.shape[0])
        if n == self.input_shape[0]:
            return self.run(x)
        with self._lock:
            interpreter = self._batched.get(n) or self._resized(n)
            return self._invoke(interpreter, x)

    def prepare_batch(self, n: int) -> None:
        """Make the batch-``n`` interpreter now (see :meth:`run_batch`), so a model that cannot take it fails here."""
        if n != self.input_shape[0]:
            with self._lock:
                if n not in self._batched:
                    self._resized(n)

    def _resized(self, n: int):
        shape = [n, *self.input_shape[1:]]
        try:
            interpreter = self._cls(model_path=str(self.path), num_threads=self._num_threads)
            interpreter.resize_tensor_input(self.input_detail["index"], shape)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFormatError(f"{self.path}: the runtime cannot resize its input to a batch of {n} ({exc}); "
                                   "run the inputs one at a time, or re-export the model with a free batch dimension.") from exc
        shapes = {d["index"]: tuple(int(v) for v in d["shape"]) for d in interpreter.get_output_details()}
        got = [shapes.get(d["index"]) for d in self.output_details]
        want = [(n, *s[1:]) for s in self.output_shapes]
        if got != want:
            raise ModelFormatError(f"{self.path}: with a batch of {n} the outputs are {got}, not {want} (a fixed batch "
                                   "size inside the graph); run the inputs one at a time.")
        self._batched[n] = interpreter
        return interpreter

    def _invoke(self, interpreter, x: np.ndarray) -> list[np.ndarray]:
        interpreter.set_tensor(self.input_detail["index"], quantize(x, self.input_detail))
        interpreter.invoke()
        return [dequantize(interpreter.get_tensor(d["index"]), d) for d in self.output_details]
