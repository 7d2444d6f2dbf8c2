"""Every kind of input, good and bad, through hematovision.load_image."""

import io

import numpy as np
import pytest
from PIL import Image

from hematovision import ImageNotFoundError, ImageTooLargeError, InvalidImageError, load_image


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.zeros((40, 50, 3), np.uint8),
        lambda: np.zeros((40, 50), np.uint8),
        lambda: np.zeros((40, 50, 1), np.uint8),
        lambda: np.zeros((40, 50, 4), np.uint8),
        lambda: np.zeros((40, 50, 3), np.uint16),
        lambda: np.zeros((40, 50, 3), np.float32),
        lambda: Image.new("RGB", (50, 40)),
        lambda: Image.new("L", (50, 40)),
        lambda: Image.new("RGBA", (50, 40)),
        lambda: Image.new("CMYK", (50, 40)),
        lambda: Image.new("I;16", (50, 40)),
        lambda: Image.new("P", (50, 40)),
        lambda: _png(Image.new("RGB", (50, 40))),
    ],
)
def test_every_supported_input_becomes_rgb_uint8(make):
    out = load_image(make())
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8 and out.flags.c_contiguous


@pytest.mark.parametrize(
    "arr, expected",
    [
        (np.full((20, 20), 65535, np.uint16), 255),  # 16-bit scaled by 257
        (np.full((20, 20), 257 * 100, np.uint16), 100),
        (np.full((20, 20), 0.5, np.float32), 128),  # float in [0, 1]
        (np.full((20, 20), 200.0, np.float64), 200),  # float in [0, 255]
        (np.dstack([np.full((20, 20, 3), 0, np.uint8), np.full((20, 20), 0, np.uint8)]), 255),  # transparent -> white
        (np.dstack([np.full((20, 20, 3), 10, np.uint8), np.full((20, 20), 255, np.uint8)]), 10),  # opaque
    ],
)
def test_bit_depth_and_alpha_golden_values(arr, expected):
    assert int(load_image(arr)[0, 0, 0]) == expected


def test_16bit_tiff_file(tmp_path):
    path = tmp_path / "cell16.tif"
    Image.fromarray(np.full((30, 30), 512 * 100, np.uint16)).save(path)
    assert load_image(path).max() == round(51200 / 257)


def test_rgba_png_composited_on_white(tmp_path):
    path = tmp_path / "a.png"
    rgba = np.zeros((30, 30, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:15, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(path)
    out = load_image(path)
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[-1, -1]) == (255, 255, 255)


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (60, 30))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    out = load_image(_png(im, format="JPEG", exif=exif.tobytes()))
    assert out.shape == (60, 30, 3)


@pytest.mark.parametrize(
    "make_bytes, message",
    [
        (lambda: b"", "not a readable image"),
        (lambda: b"this is text, not an image" * 10, "not a readable image"),
        (lambda: _png(Image.new("RGB", (64, 64), (200, 10, 10)), format="JPEG")[:300], "corrupt or truncated"),
        (lambda: _png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))[:400], "corrupt or truncated"),
    ],
)
def test_broken_bytes(make_bytes, message):
    with pytest.raises(InvalidImageError, match=message):
        load_image(make_bytes())


def test_zero_byte_file_and_text_named_jpg(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(InvalidImageError, match="empty"):
        load_image(empty)
    text = tmp_path / "notes.jpg"
    text.write_text("hello, I am not a JPEG")
    with pytest.raises(InvalidImageError, match="not a readable image"):
        load_image(text)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(ImageNotFoundError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError):  # the builtin a caller would catch
        load_image(str(tmp_path / "nope.png"))
    with pytest.raises(InvalidImageError, match="directory"):
        load_image(tmp_path)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    # 30,000 x 30,000 one-bit PNG: ~100 KB on disk, 900 MP once decoded.
    path = tmp_path / "bomb.png"
    Image.new("1", (30000, 30000)).save(path)
    assert path.stat().st_size < 2_000_000
    with pytest.raises(ImageTooLargeError, match="exceeds the budget"):
        load_image(path)


def test_pixel_budget_for_arrays_and_override():
    with pytest.raises(ImageTooLargeError):
        load_image(np.zeros((100, 100, 3), np.uint8), max_pixels=5000)
    assert load_image(np.zeros((100, 100, 3), np.uint8), max_pixels=10_000).shape == (100, 100, 3)


@pytest.mark.parametrize(
    "arr, message",
    [
        (np.full((20, 20, 3), np.nan, np.float32), "NaN or infinite"),
        (np.full((20, 20, 3), np.inf, np.float32), "NaN or infinite"),
        (np.full((20, 20, 3), -1.0, np.float32), "expected"),
        (np.zeros((1, 1, 3), np.uint8), "too small"),
        (np.zeros((20, 20, 2), np.uint8), "not an image"),
        (np.zeros((4, 20, 20, 3), np.uint8), "not an image"),
        (np.zeros((20, 20, 3), np.complex64), "dtype"),
    ],
)
def test_bad_arrays(arr, message):
    with pytest.raises(InvalidImageError, match=message):
        load_image(arr)


def test_animated_gif_and_multipage_tiff_refused(tmp_path):
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0))]
    gif = tmp_path / "a.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    tif = tmp_path / "stack.tif"
    frames[0].save(tif, save_all=True, append_images=frames[1:])
    for path in (gif, tif):
        with pytest.raises(InvalidImageError, match="frames"):
            load_image(path)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(path)
    out = load_image(path)
    assert out.shape == (40, 40, 3) and out[..., 0].mean() > 200 and out[..., 1].mean() < 60


def test_unsupported_type():
    with pytest.raises(InvalidImageError, match="unsupported input type"):
        load_image(12345)
