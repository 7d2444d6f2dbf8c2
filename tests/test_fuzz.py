"""Fuzzing the image-loading path with Hypothesis: random bytes, mutated real images, odd arrays.

The contract (``hematovision.images``): any input either becomes an
``(H, W, 3)`` uint8 RGB array or raises a :class:`~hematovision.errors.HematoVisionError`
subclass; no other exception type escapes, and the process does not crash.
The real images are the repo's examples/ JPEGs, re-encoded into every format
Pillow writes that a user might upload, so each decoder gets mutated input.

Runs are derandomized (the same examples in every CI run); set
``HEMATOVISION_FUZZ_EXAMPLES`` to run more and ``HEMATOVISION_FUZZ_RANDOM=1`` for
fresh random examples, e.g. ``HEMATOVISION_FUZZ_EXAMPLES=5000 HEMATOVISION_FUZZ_RANDOM=1``.
"""

from __future__ import annotations

import io
import os
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from hematovision import HematoVisionError, load_image
from tests.conftest import EXAMPLES

# Pillow warns about the corrupt metadata it survives; that is the point here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

N = int(os.environ.get("HEMATOVISION_FUZZ_EXAMPLES", "250"))
#: ``HEMATOVISION_FUZZ_RANDOM=1``: new random examples each run (exploration) instead of the fixed CI set.
FIXED = os.environ.get("HEMATOVISION_FUZZ_RANDOM", "") not in ("1", "true", "yes")
FUZZ = settings(max_examples=N, deadline=None, derandomize=FIXED, suppress_health_check=[HealthCheck.too_slow],
                database=None)
#: A small pixel budget keeps each decode cheap; the size checks run all the same.
BUDGET = 4_000_000

EXAMPLE_FILES = sorted(EXAMPLES.glob("*/*.jpg"))[:4]
FORMATS = {"JPEG": {"quality": 85}, "PNG": {}, "GIF": {}, "BMP": {}, "TIFF": {}, "WEBP": {"quality": 80}, "ICO": {},
           "PPM": {}, "TGA": {}}


@lru_cache(maxsize=None)
def seeds() -> tuple[bytes, ...]:
    """Real cell images in every format: the originals plus each re-encoded (downscaled to keep decodes fast)."""
    out = [p.read_bytes() for p in EXAMPLE_FILES]
    for p in EXAMPLE_FILES[:2]:
        im = Image.open(p).convert("RGB").resize((64, 64))
        for fmt, kw in FORMATS.items():
            buf = io.BytesIO()
            im.save(buf, format=fmt, **kw)
            out.append(buf.getvalue())
        buf = io.BytesIO()
        im.save(buf, format="TIFF", compression="tiff_deflate")
        out.append(buf.getvalue())
        buf = io.BytesIO()
        im.convert("CMYK").save(buf, format="JPEG")
        out.append(buf.getvalue())
        buf = io.BytesIO()
        im.convert("P").save(buf, format="PNG", transparency=0)
        out.append(buf.getvalue())
    return tuple(out)


def check(image) -> None:
    """The contract: a valid RGB array, or a HematoVisionError (anything else fails the test)."""
    try:
        out = load_image(image, max_pixels=BUDGET)
    except HematoVisionError as exc:
        assert str(exc).strip(), "an error without a message"
        return
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.flags.c_contiguous and out.shape[0] * out.shape[1] <= BUDGET


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "flip-header", "truncate", "insert", "delete", "duplicate", "int"]))
        n = len(data)
        if n == 0:
            break
        pos = draw(st.integers(0, n - 1))
        if kind == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "flip-header":  # sizes, counts and offsets live in the first bytes of every format
            data[pos % min(n, 64)] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif kind == "duplicate":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 256))]
        else:  # an extreme integer (a width, a length, an offset) written over 2 or 4 bytes
            width = draw(st.sampled_from([2, 4]))
            value = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            data[pos % min(n, 256):pos % min(n, 256) + width] = (value & (256**width - 1)).to_bytes(width, draw(st.sampled_from(["big", "little"])))
    return bytes(data)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    check(data)


@FUZZ
@given(st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"II*\x00", b"MM\x00*", b"BM", b"RIFF", b"\x00\x00\x01\x00", b"P6\n"]),
       st.binary(max_size=1024))
def test_random_bytes_behind_a_real_magic_number(magic, rest):
    check(magic + rest)


@FUZZ
@given(mutated())
def test_mutated_real_images(data):
    check(data)


@settings(max_examples=max(N // 5, 20), deadline=None, derandomize=FIXED, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutated())
def test_mutated_real_images_from_a_file(tmp_path, data):
    """The path entry point (what the CLI and the app use), with the file's suffix lying about the format."""
    path = tmp_path / "upload.jpg"
    path.write_bytes(data)
    check(path)
    check(str(path))


@FUZZ
@given(hnp.arrays(dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_,
                                         np.int8, np.complex64]),
                  shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=40)))
def test_arrays(arr):
    check(arr)


def test_the_seeds_themselves_load():
    """Sanity: the unmutated seeds are valid images, so the mutations start from real decoders' input."""
    for data in seeds():
        try:
            assert load_image(data).shape[2] == 3
        except HematoVisionError as exc:  # ICO/TGA of a 64x64 image are fine; anything else is a fixture error
            pytest.fail(f"seed image refused: {exc}")


@pytest.fixture(scope="module")
def tiny_clf(tiny_models):
    from hematovision import load_model

    return load_model(tiny_models["tiny-int8"])


@settings(max_examples=max(N // 5, 20), deadline=None, derandomize=FIXED, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutated())
def test_mutated_images_through_predict(tiny_clf, data):
    """The whole public path (decode, resize, network, CAM) on what survives decoding."""
    try:
        pred = tiny_clf.predict(data)
    except HematoVisionError:
        return
    assert pred.label in tiny_clf.labels and np.isfinite(pred.confidence)
