"""Multiply-accumulates (MACs) per image, counted two independent ways, and a Raspberry Pi latency estimate.

1. From the ``.tflite`` flatbuffer (what the device runs): the interpreter is
   opened without delegates, so each op is the converter's own, and for every
   op the MACs follow from its tensors' shapes:

   - ``CONV_2D``: filter ``(O, kh, kw, I)``, output ``(1, H, W, O)``: ``H*W*O*kh*kw*I``;
   - ``DEPTHWISE_CONV_2D``: filter ``(1, kh, kw, C)``: ``H*W*C*kh*kw``;
   - ``FULLY_CONNECTED``: weights ``(O, I)``: ``batch*O*I``;
   - every other op (ADD, MEAN, PAD, QUANTIZE...) is counted as elementwise work, one
     operation per output element, and reported separately, not as MACs.

2. Analytically from the Keras model's layers (``Conv2D``, ``DepthwiseConv2D``,
   ``Dense``, recursing into nested models) with the same formulas. The two
   agree when BatchNormalization is folded into the convolutions, as the converter does.

Raspberry Pi estimate: an anchor, not a measurement. The XNNPACK README
(github.com/google/XNNPACK, benchmark of 2019-12-12) gives 47 ms for float32
MobileNet v2 1.0 224 (300 M MACs, Sandler et al. 2018) on a Raspberry Pi 4
(BCM2711, 4 threads): about 6.4 G MACs/s. Assumptions: int8 through XNNPACK is
1-2x as fast as float32 on the A72 (no dot-product instructions); a small
network reaches at best the same MAC rate (its layers are too small to keep 4
threads busy, so the upper bound assumes half that rate); a Raspberry Pi 5
(Cortex-A76, 2.4 GHz) is 2-3x a Pi 4 per the vendor's CPU figure. So
``t_pi4 = MACs / 6.4e9 s x [0.5, 2]`` and ``t_pi5 = t_pi4 / [3, 2]``; to be
checked with ``python -m bench --only latency`` on the Pi (no TensorFlow needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Anchor for the Pi estimate: float32 MobileNet v2 1.0 224, 4 threads, XNNPACK, Raspberry Pi 4.
PI4_ANCHOR_MS = 47.0
PI4_ANCHOR_MACS = 300e6
PI4_MACS_PER_S = PI4_ANCHOR_MACS / (PI4_ANCHOR_MS / 1000.0)
MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@dataclass(frozen=True)
class OpCount:
    """The MACs of one kind of TFLite op, all of its occurrences together."""

    op: str
    count: int  # number of such ops
    macs: int


@dataclass(frozen=True)
class PiEstimate:
    """A latency range of one network pass (or one image) on a Raspberry Pi board, from the MAC count."""

    board: str
    low_ms: float
    high_ms: float


@dataclass(frozen=True)
class MacReport:
    """The model's multiply-accumulates, by op and in total, and what they predict on a Pi."""

    model: str
    tflite_macs: int
    by_op: tuple[OpCount, ...]
    elementwise_ops: int  # outputs of non-MAC ops (not included in tflite_macs)
    parameters: int  # elements of the constant tensors the MAC ops use (weights + biases)
    keras_macs: int | None
    here_ms: float | None  # measured latency of one network pass on this machine, if given
    here_macs_per_s: float | None
    pi: tuple[PiEstimate, ...]  # one network pass
    views_per_image: int = 1  # network passes per image (8 with dihedral test-time augmentation)
    pi_per_image: tuple[PiEstimate, ...] = ()  # every pass of one image
    method: str = "TFLite flatbuffer ops x tensor shapes (no delegates); Keras layers analytically as a cross-check"


def _interpreter(path: Path):
    from hematovision.runtime import interpreter_class

    cls, name = interpreter_class()
    kwargs = {}
    if name == "ai-edge-litert":
        from ai_edge_litert.interpreter import OpResolverType

        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    elif name == "tensorflow":
        import tensorflow as tf

        kwargs["experimental_op_resolver_type"] = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    elif name == "tflite-runtime":
        from tflite_runtime.interpreter import OpResolverType

        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = cls(model_path=str(path), **kwargs)
    it.allocate_tensors()
    return it


def count_tflite(path: str | Path) -> tuple[dict[str, OpCount], int, int]:
    """``({op: OpCount}, elementwise outputs, parameters)`` of a .tflite file."""
    it = _interpreter(Path(path))
    shapes = {d["index"]: tuple(int(v) for v in d["shape"]) for d in it.get_tensor_details()}
    counts: dict[str, list[int]] = {}
    elementwise = params = 0
    for op in it._get_ops_details():  # noqa: SLF001 - the interpreters' only op-level introspection
        name = op["op_name"]
        ins = [i for i in op["inputs"] if i >= 0]
        out = shapes.get(int(op["outputs"][0]), ()) if len(op["outputs"]) else ()
        macs = 0
        if name == "CONV_2D":
            o, kh, kw, i = shapes[ins[1]]
            macs = int(np.prod(out[:-1])) * o * kh * kw * i
        elif name == "DEPTHWISE_CONV_2D":
            _, kh, kw, c = shapes[ins[1]]
            macs = int(np.prod(out[:-1])) * c * kh * kw
        elif name == "FULLY_CONNECTED":
            o, i = shapes[ins[1]]
            macs = int(np.prod(out[:-1])) * o * i
        else:
            elementwise += int(np.prod(out)) if out else 0
            continue
        params += sum(int(np.prod(shapes[j])) for j in ins[1:])
        c = counts.setdefault(name, [0, 0])
        c[0] += 1
        c[1] += macs
    return {k: OpCount(k, n, m) for k, (n, m) in counts.items()}, elementwise, params


def count_keras(model) -> int:
    """MACs of one image through a Keras model's Conv2D / DepthwiseConv2D / Dense layers (nested models too)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_keras(layer)
            continue
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            continue
        out = tuple(int(v) for v in layer.output.shape[1:])
        kernel = tuple(int(v) for v in layer.kernel.shape)
        if isinstance(layer, keras.layers.DepthwiseConv2D):  # kernel (kh, kw, C, multiplier)
            total += int(np.prod(out[:-1])) * out[-1] * kernel[0] * kernel[1]
        elif isinstance(layer, keras.layers.Conv2D):  # kernel (kh, kw, I / groups, O)
            total += int(np.prod(out[:-1])) * out[-1] * kernel[0] * kernel[1] * kernel[2]
        else:  # Dense: kernel (I, O)
            total += int(np.prod(out[:-1])) * kernel[0] * kernel[1]
    return total


def pi_estimates(macs: int) -> tuple[PiEstimate, ...]:
    base_ms = macs / PI4_MACS_PER_S * 1000.0
    pi4 = PiEstimate("Raspberry Pi 4 (4x A72 1.5-1.8 GHz, 4 threads)", base_ms * 0.5, base_ms * 2.0)
    pi5 = PiEstimate("Raspberry Pi 5 (4x A76 2.4 GHz, 4 threads)", pi4.low_ms / 3.0, pi4.high_ms / 2.0)
    return pi4, pi5


def run(tflite_path: str | Path, *, keras_path: str | Path | None = None, here_ms: float | None = None,
        model_name: str = "", views_per_image: int = 1) -> MacReport:
    by_op, elementwise, params = count_tflite(tflite_path)
    total = sum(c.macs for c in by_op.values())
    keras_macs = None
    if keras_path is not None:
        import keras

        keras_macs = count_keras(keras.saving.load_model(str(keras_path), compile=False))
    return MacReport(
        model=model_name or Path(tflite_path).stem, tflite_macs=total, by_op=tuple(by_op.values()), elementwise_ops=elementwise,
        parameters=params, keras_macs=keras_macs, here_ms=here_ms,
        here_macs_per_s=(total / (here_ms / 1000.0)) if here_ms else None, pi=pi_estimates(total),
        views_per_image=views_per_image, pi_per_image=pi_estimates(total * views_per_image) if views_per_image > 1 else ())
