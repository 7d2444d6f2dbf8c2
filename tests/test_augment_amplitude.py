"""Fourier amplitude mixing (training.augment.amplitude_mix), its pool (training.amplitude_pool) and --amplitude-mix."""

from argparse import Namespace

import cv2
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="the training augmentations need TensorFlow (requirements-dev.txt)")

from training.amplitude_pool import amplitude_spectrum, collect  # noqa: E402
from training.amplitude_pool import main as pool_main  # noqa: E402
from training.augment import amplitude_mix  # noqa: E402


def smooth_images(n, seed, size=32):
    """Mid-grey images with soft structure (values stay well inside [0, 1], so no mix is clipped)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, size, size, 3)).astype(np.float32)
    x = np.stack([cv2.GaussianBlur(im, (0, 0), 2.0) for im in x])
    return 0.5 + 0.4 * (x - x.mean()) / (np.abs(x - x.mean()).max() + 1e-6)


def spectra(x):
    return np.fft.fft2(np.moveaxis(np.asarray(x, np.float64), -1, 1))


def pool_of(images):
    return tf.constant(np.abs(spectra(images)).astype(np.float32))


def test_probability_zero_changes_nothing():
    x = tf.constant(smooth_images(4, 0))
    np.testing.assert_array_equal(amplitude_mix(x, pool_of(smooth_images(3, 1)), p=0.0).numpy(), x.numpy())


def test_mixing_towards_its_own_amplitude_gives_the_image_back():
    x = smooth_images(4, 0)
    y = amplitude_mix(tf.constant(x), pool_of(x[:1]), p=1.0).numpy()
    np.testing.assert_allclose(y[0], x[0], atol=1e-4)  # the DFT round trip in complex64


def test_the_mix_keeps_the_phase_and_moves_the_amplitude_between_the_two():
    tf.random.set_seed(3)
    x, t = smooth_images(6, 0), smooth_images(1, 1)
    y = amplitude_mix(tf.constant(x), pool_of(t), p=1.0).numpy()
    assert 0.0 < y.min() and y.max() < 1.0  # nothing clipped, so the maths holds exactly
    fx, fy, at = spectra(x), spectra(y), np.abs(spectra(t))
    strong = np.abs(fx) > 1e-2 * np.abs(fx).max()
    dphase = np.angle(fy * np.conj(fx))
    assert np.abs(dphase[strong]).max() < 1e-3
    # |F'| = (1 - lam) |F| + lam |F_t| with one lam per image: recover it from the DC term and check every frequency
    for i in range(len(x)):
        ax, ay = np.abs(fx[i]), np.abs(fy[i])
        lam = (ay[0, 0, 0] - ax[0, 0, 0]) / (at[0, 0, 0, 0] - ax[0, 0, 0])
        assert 0.0 <= lam <= 1.0
        np.testing.assert_allclose(ay, (1 - lam) * ax + lam * at[0], atol=2e-3 * ax.max())


def test_a_share_of_the_samples_is_mixed():
    tf.random.set_seed(0)
    x = smooth_images(200, 0, size=16)
    y = amplitude_mix(tf.constant(x), pool_of(smooth_images(5, 1, size=16)), p=0.5).numpy()
    changed = np.abs(y - x).max(axis=(1, 2, 3)) > 1e-3
    assert 0.35 < changed.mean() < 0.65


def test_the_pool_spectrum_of_a_flat_image_is_its_dc_term():
    a = amplitude_spectrum(np.full((16, 16, 3), (255, 51, 0), np.uint8))
    assert a.shape == (3, 16, 16)
    np.testing.assert_allclose(a[:, 0, 0], [256.0, 0.2 * 256, 0.0], rtol=1e-5)
    a[:, 0, 0] = 0
    assert np.abs(a).max() < 1e-3


def test_the_pool_command_writes_spectra_and_their_sources(tmp_path):
    folder = tmp_path / "lab"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((40, 40, 3), 40 * i, np.uint8))
    out = tmp_path / "pool.npz"
    assert pool_main(["--images", str(folder), "--size", "16", "--out", str(out)]) == 0
    with np.load(out) as saved:
        assert saved["amplitude"].shape == (3, 3, 16, 16) and int(saved["size"]) == 16
        assert "(3 images)" in str(saved["sources"][0])
    pool = collect([folder], size=16, limit=2)
    assert len(pool.values) == 2 and "(2 images)" in pool.used[0] and pool.skipped == []


POOL_COMMANDS = pytest.mark.parametrize("command", ["training.amplitude_pool", "training.colour_pool"])


def pool_command(name):
    import importlib

    return importlib.import_module(name).main


@POOL_COMMANDS
@pytest.mark.parametrize("argv,message", [
    (["--images", "{empty}", "--out", "{out}"], "no readable images under"),
    (["--images", "{broken}", "--out", "{out}"], "no readable images under"),
    (["--images", "{empty}", "--limit", "0", "--out", "{out}"], "argument --limit"),
])
def test_the_pool_commands_reject_bad_input(tmp_path, capsys, command, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    argv = [a.format(empty=tmp_path / "empty", broken=tmp_path / "broken", out=tmp_path / "p.npz") for a in argv]
    with pytest.raises(SystemExit) as exc:
        pool_command(command)(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "p.npz").exists()


def test_the_amplitude_pool_needs_a_real_size(tmp_path, capsys):
    with pytest.raises(SystemExit):
        pool_main(["--images", str(tmp_path), "--size", "4", "--out", str(tmp_path / "p.npz")])
    assert "--size must be at least 8" in capsys.readouterr().err


@POOL_COMMANDS
def test_unreadable_images_are_listed_and_skipped(tmp_path, capsys, command):
    folder = tmp_path / "lab"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), np.full((40, 40, 3), 90, np.uint8))
    (folder / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    out = tmp_path / "pool.npz"
    assert pool_command(command)(["--images", str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "skipped (unreadable)" in err and "truncated.jpg" in err and "good.png" not in err
    with np.load(out) as saved:
        assert "(1 images)" in str(saved["sources"][0])


def test_amplitude_mix_needs_a_pool(capsys):
    from training.cam_supervised import main

    with pytest.raises(SystemExit):
        main(["--init-model", "x.keras", "--data", "x", "--out", "x", "--amplitude-mix", "0.5"])
    assert "--amplitude-mix needs --amplitude-pool" in capsys.readouterr().err


def write_pool(path, size):
    np.savez(path, amplitude=np.abs(spectra(smooth_images(2, 1, size=size))).astype(np.float16), size=size,
             sources=np.array(["lab (2 images)"]))


def test_cam_supervised_mixes_before_the_levels_appearance(tmp_path):
    from training.cam_supervised import _augmenters

    write_pool(tmp_path / "pool.npz", 16)
    config = {}
    args = Namespace(augment="basic", colour_pool=None, grayscale=0.0, amplitude_mix=1.0,
                     amplitude_pool=str(tmp_path / "pool.npz"), img_size=16)
    _, appearance = _augmenters(args, config)
    assert config["amplitude_pool"]["images"] == 2 and config["amplitude_pool"]["p"] == 1.0
    x = tf.constant(smooth_images(8, 0, size=16))
    tf.random.set_seed(0)
    mixed = appearance(x).numpy()
    _, plain = _augmenters(Namespace(augment="basic", colour_pool=None, grayscale=0.0, amplitude_mix=0.0), {})
    tf.random.set_seed(0)
    assert np.abs(mixed - plain(x).numpy()).max() > 0.01


def test_a_pool_at_another_size_is_refused(tmp_path):
    from training.cam_supervised import _augmenters

    write_pool(tmp_path / "pool.npz", 16)
    args = Namespace(augment="basic", colour_pool=None, grayscale=0.0, amplitude_mix=0.5,
                     amplitude_pool=str(tmp_path / "pool.npz"), img_size=128)
    with pytest.raises(ValueError, match="--size 128"):
        _augmenters(args, {})
