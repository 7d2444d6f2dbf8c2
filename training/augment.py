"""Batched augmentation for stained smear images (float RGB in [0, 1]).

``basic``: the dihedral group (flips, 90-degree rotations), small zoom and
shift, brightness/contrast/hue/saturation jitter for stain variation.
``lab`` adds what another microscope does to a cell: white balance and gamma,
defocus blur, sensor noise, a downscale-upscale round trip.
``crosslab`` is built to cover other labs' cells zero-shot (cross-lab issue):
a wide log-uniform zoom (0.7x-2.5x: loose fields to crops the cell fills, as
zheng1's), a random stain-matrix (HED) perturbation and strong hue/saturation
jitter, random colour transfer towards real other-lab colour statistics
(``colour_pool``), stronger optics (defocus, noise, low resolution, JPEG,
vignetting). Every transform is drawn per sample.
"""

from __future__ import annotations


import tensorflow as tf

LEVELS = ("none", "basic", "lab", "crosslab")


def _uniform(batch, lo, hi):
    return tf.random.uniform([batch, 1, 1, 1], lo, hi)


def _coin(batch, p):
    return tf.random.uniform([batch, 1, 1, 1]) < p


def dihedral(x):
    """One of the 8 symmetries of the square per sample (cells have no up)."""
    b = tf.shape(x)[0]
    x = tf.where(_coin(b, 0.5), tf.reverse(x, [2]), x)
    x = tf.where(_coin(b, 0.5), tf.reverse(x, [1]), x)
    return tf.where(_coin(b, 0.5), tf.transpose(x, [0, 2, 1, 3]), x)


def zoom_shift(x, zoom=0.12, shift=0.06):
    """Random scale in [1-zoom, 1+zoom] and shift, reflecting at the borders."""
    b = tf.shape(x)[0]
    s = tf.random.uniform([b], 1.0 - zoom, 1.0 + zoom)
    tx = tf.random.uniform([b], -shift, shift) * tf.cast(tf.shape(x)[2], tf.float32)
    ty = tf.random.uniform([b], -shift, shift) * tf.cast(tf.shape(x)[1], tf.float32)
    return scale_translate(x, s, tx, ty)


def scale_translate(x, s, tx, ty):
    """Scale each sample by ``s`` about the centre and shift it by (tx, ty) px, reflecting at the borders."""
    h = tf.cast(tf.shape(x)[1], tf.float32)
    w = tf.cast(tf.shape(x)[2], tf.float32)
    # Output pixel p maps to input (p - c) / s + c + t, c the centre.
    a0 = 1.0 / s
    zeros = tf.zeros_like(s)
    transforms = tf.stack(
        [a0, zeros, (1 - a0) * (w - 1) / 2 + tx, zeros, a0, (1 - a0) * (h - 1) / 2 + ty, zeros, zeros], axis=1
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3], interpolation="BILINEAR",
        fill_mode="REFLECT", fill_value=0.0,
    )


def colour(x, strength=1.0):
    """Stain variation: hue shift, saturation, brightness, contrast (per sample)."""
    b = tf.shape(x)[0]
    hsv = tf.image.rgb_to_hsv(x)
    hue = tf.math.floormod(hsv[..., 0:1] + _uniform(b, -0.04, 0.04) * strength, 1.0)
    sat = tf.clip_by_value(hsv[..., 1:2] * _uniform(b, 1 - 0.3 * strength, 1 + 0.3 * strength), 0.0, 1.0)
    x = tf.image.hsv_to_rgb(tf.concat([hue, sat, hsv[..., 2:3]], axis=-1))
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * _uniform(b, 1 - 0.2 * strength, 1 + 0.2 * strength) + mean
    x = x + _uniform(b, -0.08, 0.08) * strength
    return tf.clip_by_value(x, 0.0, 1.0)


def white_balance_gamma(x):
    """Lamp colour (per-channel gain) and camera gamma."""
    b = tf.shape(x)[0]
    gains = tf.random.uniform([b, 1, 1, 3], 0.9, 1.1)
    x = tf.clip_by_value(x * gains, 1e-4, 1.0)
    return tf.pow(x, _uniform(b, 0.8, 1.25))


def _gaussian_kernel(sigma, radius=3):
    t = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * tf.square(t / sigma))
    k = k / tf.reduce_sum(k)
    k2 = k[:, None] * k[None, :]
    return tf.tile(k2[:, :, None, None], [1, 1, 3, 1])


def defocus(x, p=0.25):
    """Gaussian blur (sigma 0.4-1.4 px at the model's size) on a random subset."""
    b = tf.shape(x)[0]
    sigma = tf.random.uniform([], 0.4, 1.4)
    padded = tf.pad(x, [[0, 0], [3, 3], [3, 3], [0, 0]], mode="REFLECT")
    blurred = tf.nn.depthwise_conv2d(padded, _gaussian_kernel(sigma), [1, 1, 1, 1], "VALID")
    return tf.where(_coin(b, p), blurred, x)


def sensor_noise(x, p=0.25):
    b = tf.shape(x)[0]
    noisy = x + tf.random.normal(tf.shape(x)) * _uniform(b, 0.0, 0.03)
    return tf.where(_coin(b, p), tf.clip_by_value(noisy, 0.0, 1.0), x)


def down_up(x, p=0.2):
    """A lower-resolution camera: shrink by 0.45-0.9 and enlarge back."""
    b = tf.shape(x)[0]
    size = tf.shape(x)[1:3]
    f = tf.random.uniform([], 0.45, 0.9)
    small = tf.cast(tf.math.round(tf.cast(size, tf.float32) * f), tf.int32)
    y = tf.image.resize(tf.image.resize(x, small, antialias=True), size, method="bilinear")
    return tf.where(_coin(b, p), y, x)


def wide_zoom_shift(x, lo=0.7, hi=2.5, p_wide=0.6, shift=0.06):
    """Log-uniform zoom in [lo, hi] for a share ``p_wide`` of samples, else the basic +-12 %."""
    b = tf.shape(x)[0]
    wide = tf.exp(tf.random.uniform([b], tf.math.log(lo), tf.math.log(hi)))
    near = tf.random.uniform([b], 0.88, 1.12)
    s = tf.where(tf.random.uniform([b]) < p_wide, wide, near)
    tx = tf.random.uniform([b], -shift, shift) * tf.cast(tf.shape(x)[2], tf.float32)
    ty = tf.random.uniform([b], -shift, shift) * tf.cast(tf.shape(x)[1], tf.float32)
    return scale_translate(x, s, tx, ty)


# Ruifrok & Johnston's H&E-DAB stain vectors (rows: optical density per unit
# stain, RGB). Romanowsky stains are not H&E, but the point (Tellez et al.
# 2019) is a plausible basis in which to rescale and shift stain amounts.
_HED = tf.constant([[0.650, 0.704, 0.286], [0.072, 0.990, 0.105], [0.268, 0.570, 0.776]], tf.float32)
_HED_INV = tf.linalg.inv(_HED)


def hed_jitter(x, sigma=0.25, bias=0.05):
    """Stain-matrix perturbation: OD = -log(I); C = OD M^-1; C' = a C + b; I' = exp(-C' M).

    a ~ U(1 - sigma, 1 + sigma), b ~ U(-bias, bias) per sample and stain channel.
    """
    b = tf.shape(x)[0]
    od = -tf.math.log(tf.clip_by_value(x, 1e-3, 1.0))
    c = tf.einsum("bhwi,ij->bhwj", od, _HED_INV)
    a = tf.random.uniform([b, 1, 1, 3], 1 - sigma, 1 + sigma)
    c = c * a + tf.random.uniform([b, 1, 1, 3], -bias, bias)
    return tf.clip_by_value(tf.exp(-tf.einsum("bhwj,ji->bhwi", c, _HED)), 0.0, 1.0)


def colour_transfer(x, pool, p=0.5):
    """Match each image's per-channel RGB mean/std to a random real image's, partly.

    ``pool`` (K, 2, 3): mean and std per channel of unlabelled other-lab images.
    x' = mu_t + (x - mu_s) * sd_t / sd_s, blended with x by a random weight.
    """
    b = tf.shape(x)[0]
    pick = tf.random.uniform([b], 0, tf.shape(pool)[0], dtype=tf.int32)
    target = tf.gather(pool, pick)  # (b, 2, 3)
    mu_t, sd_t = target[:, 0, None, None, :], target[:, 1, None, None, :]
    mu_s = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    sd_s = tf.math.reduce_std(x, axis=[1, 2], keepdims=True) + 1e-3
    y = mu_t + (x - mu_s) * sd_t / sd_s
    w = _uniform(b, 0.3, 1.0)
    y = tf.clip_by_value(w * y + (1 - w) * x, 0.0, 1.0)
    return tf.where(_coin(b, p), y, x)


def vignette(x, p=0.3):
    """Uneven illumination: I * (1 - v r^2), r from a randomly displaced centre."""
    b = tf.shape(x)[0]
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    yy = tf.linspace(-1.0, 1.0, h)[None, :, None, None]
    xx = tf.linspace(-1.0, 1.0, w)[None, None, :, None]
    cy, cx = _uniform(b, -0.5, 0.5), _uniform(b, -0.5, 0.5)
    r2 = tf.square(yy - cy) + tf.square(xx - cx)
    y = x * (1.0 - _uniform(b, 0.0, 0.35) * r2)
    return tf.where(_coin(b, p), tf.clip_by_value(y, 0.0, 1.0), x)


def jpeg(x, p=0.3):
    """JPEG at quality 30-90 (a phone camera or a re-saved export)."""
    b = tf.shape(x)[0]
    y = tf.map_fn(lambda im: tf.image.random_jpeg_quality(im, 30, 90), x)
    return tf.where(_coin(b, p), y, x)


def strong_colour(x):
    """HSV jitter wide enough for rapid stains and other cameras (hue +-0.08, saturation x0.5-1.6)."""
    b = tf.shape(x)[0]
    hsv = tf.image.rgb_to_hsv(x)
    hue = tf.math.floormod(hsv[..., 0:1] + _uniform(b, -0.08, 0.08), 1.0)
    sat = tf.clip_by_value(hsv[..., 1:2] * _uniform(b, 0.5, 1.6), 0.0, 1.0)
    val = tf.clip_by_value(hsv[..., 2:3] * _uniform(b, 0.8, 1.15), 0.0, 1.0)
    x = tf.image.hsv_to_rgb(tf.concat([hue, sat, val], axis=-1))
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value((x - mean) * _uniform(b, 0.7, 1.3) + mean, 0.0, 1.0)


def random_grayscale(x, p=0.25):
    """With probability ``p`` per sample, every pixel becomes its luminance (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B).

    A grey cell keeps its shape, nuclear lobes and granule texture but no hue, so the network cannot rely on hue
    alone (zheng1's rapid stain turns neutrophils' cytoplasm orange-brown; the shipped model calls 48 of 176 of
    them eosinophils). Colour stays in the other 1 - p of the samples, since PBC's eosinophils and basophils are
    partly told apart by it. ``training.cam_supervised --grayscale P``; off (0) in every shipped recipe.
    """
    b = tf.shape(x)[0]
    luma = tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114], x.dtype), axis=-1, keepdims=True)
    return tf.where(_coin(b, p), tf.broadcast_to(luma, tf.shape(x)), x)


def amplitude_mix(x, pool, p=0.5, max_mix=1.0):
    """Fourier amplitude mixing towards a real other-lab image (FACT, Xu et al. CVPR 2021; FDA, Yang & Soatto 2020).

    Per sample and RGB channel, F = DFT(x) = A e^{i phi}. The phase phi keeps where the cell, its nucleus and
    granules are; the amplitude A holds how the image looks as a whole: its brightness and colour (the DC term),
    how sharp it is (the high-frequency fall-off: optics, focus, resolution), its noise floor. With A_t from
    ``pool`` (K, C, H, W: ``training.amplitude_pool``, other labs' unlabelled images at the same size),
        x' = IDFT(((1 - lam) A + lam A_t) e^{i phi}),   lam ~ U(0, max_mix),
    applied with probability ``p`` per sample, then clipped to [0, 1]. A real image's amplitude is even
    (A(u, v) = A(-u, -v)) and its phase odd, so the mix keeps F' Hermitian and x' real up to float error (the
    imaginary part is dropped). ``training.cam_supervised --amplitude-pool F --amplitude-mix P``; off in every
    shipped recipe.
    """
    b = tf.shape(x)[0]
    xc = tf.transpose(x, [0, 3, 1, 2])  # the 2-D DFT runs over the two innermost axes
    f = tf.signal.fft2d(tf.cast(xc, tf.complex64))
    amp, phase = tf.abs(f), tf.math.angle(f)
    target = tf.gather(pool, tf.random.uniform([b], 0, tf.shape(pool)[0], dtype=tf.int32))
    lam = _uniform(b, 0.0, max_mix)  # (b, 1, 1, 1)
    mixed = (1.0 - lam) * amp + lam * target
    y = tf.math.real(tf.signal.ifft2d(tf.complex(mixed * tf.cos(phase), mixed * tf.sin(phase))))
    y = tf.clip_by_value(tf.transpose(y, [0, 2, 3, 1]), 0.0, 1.0)
    return tf.where(_coin(b, p), y, x)


def lab_appearance(x):
    """The lab level's colour and optics transforms (everything but the geometry)."""
    x = white_balance_gamma(x)
    x = colour(x, strength=1.0)
    x = defocus(x)
    x = down_up(x)
    x = sensor_noise(x)
    return tf.clip_by_value(x, 0.0, 1.0)


def crosslab_appearance(x, pool=None):
    """The crosslab level's colour and optics transforms (everything but the geometry)."""
    x = white_balance_gamma(x)
    if pool is not None:
        x = colour_transfer(x, pool)
    x = hed_jitter(x)
    x = strong_colour(x)
    x = vignette(x)
    x = defocus(x, p=0.3)
    x = down_up(x, p=0.3)
    x = sensor_noise(x, p=0.3)
    x = jpeg(x)
    return tf.clip_by_value(x, 0.0, 1.0)


def make_augment(level: str, *, out_size: int | None = None, colour_pool=None):
    """Return a batched augmentation function for ``level`` (None for 'none').

    ``out_size``: resize to this square size after the geometric transforms
    (training images decoded larger than the model input keep detail when the
    wide zoom enlarges a cell). ``colour_pool``: (K, 2, 3) array for
    ``colour_transfer`` (crosslab only; skipped when None).
    """
    if level not in LEVELS:
        raise ValueError(f"augmentation level must be one of {LEVELS}, not {level!r}")
    if level == "none":
        return None
    if level == "crosslab":
        pool = None if colour_pool is None else tf.constant(colour_pool, tf.float32)

        def augment_crosslab(x):
            x = wide_zoom_shift(dihedral(x))
            if out_size is not None:
                x = tf.image.resize(x, (out_size, out_size), antialias=True)
            return crosslab_appearance(x, pool)

        return augment_crosslab

    def augment(x):
        x = zoom_shift(dihedral(x))
        if out_size is not None:
            x = tf.image.resize(x, (out_size, out_size), antialias=True)
        return lab_appearance(x) if level == "lab" else tf.clip_by_value(colour(x), 0.0, 1.0)

    return augment


