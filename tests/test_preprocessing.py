import numpy as np
import pytest

from hematovision.preprocessing import normalize, prepare, resize
from hematovision.spec import InputSpec

SPEC = InputSpec(height=8, width=8)


@pytest.mark.parametrize("pixel, expected", [(0, -1.0), (255, 1.0), (127.5, 0.0), (51, -0.6)])
def test_mobilenet_normalisation_golden(pixel, expected):
    img = np.full((8, 8, 3), pixel, np.float32)
    assert normalize(img, SPEC)[0, 0, 0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("shape", [(8, 8), (16, 16), (160, 160), (363, 360), (1000, 1000), (9, 30)])
def test_prepare_shape_and_dtype(shape):
    x = prepare(np.zeros((*shape, 3), np.uint8), SPEC)
    assert x.shape == (1, 8, 8, 3) and x.dtype == np.float32


def test_shrinking_is_antialiased():
    # A 1-pixel checkerboard averages to mid-grey when shrunk (no aliasing).
    board = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    out = resize(np.dstack([board] * 3), 8, 8)
    assert np.all(np.abs(out.astype(int) - 128) <= 1)


def test_same_cell_any_resolution():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    small = resize(base, 8, 8)
    big = resize(resize(base, 400, 400), 8, 8)
    assert np.abs(small.astype(int) - big.astype(int)).mean() < 3


def test_bgr_order_flips_channels():
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0] = 255
    x = normalize(img, InputSpec(height=8, width=8, color_order="BGR"))
    assert x[0, 0, 2] == pytest.approx(1.0) and x[0, 0, 0] == pytest.approx(-1.0)


@pytest.mark.parametrize("color_order", ["RGB", "BGR"])
@pytest.mark.parametrize("quantization, dtype", [((0.007689350284636021, -3), np.int8), ((0.0078431, -1), np.int8),
                                                 ((0.0078431, 128), np.uint8)])
def test_lookup_table_gives_the_same_quantized_tensor_as_prepare(color_order, quantization, dtype):
    """prepare -> quantize and the 256-entry table agree on every pixel value, channel order included."""
    from hematovision.preprocessing import input_table, prepare_quantized
    from hematovision.runtime import quantize

    spec = InputSpec(height=16, width=16, color_order=color_order)
    detail = {"dtype": dtype, "quantization": quantization}
    image = np.random.default_rng(1).integers(0, 256, (40, 33, 3), dtype=np.uint8)
    image[0, :3] = [[0, 0, 0], [255, 255, 255], [127, 128, 129]]
    table = input_table(spec, lambda x: quantize(x, detail))
    via_float = quantize(prepare(image, spec), detail)
    via_table = prepare_quantized(image, spec, table)
    assert via_table.dtype == dtype and via_table.shape == (1, 16, 16, 3)
    np.testing.assert_array_equal(via_table, via_float)


@pytest.mark.parametrize("kind", ["int8", "float32"])
def test_classifier_outputs_do_not_depend_on_the_input_path(tiny_models, disc, kind):
    """forward(prepare(x)) and forward(network_input(x)) give identical logits and feature maps."""
    import hematovision

    clf = hematovision.load_model(tiny_models[f"tiny-{kind}"])
    assert (clf.input_table is not None) == (kind == "int8")
    for seed in range(3):
        rgb = disc(("red", "green", "blue")[seed], size=50 + seed * 20, seed=seed)
        a, b = clf.forward(prepare(rgb, clf.spec.input)), clf.forward(clf.network_input(rgb))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
