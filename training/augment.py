"""Batched augmentation for stained smear images (float RGB in [0, 1]).

``basic``: the dihedral group (flips, 90-degree rotations), small zoom and
shift, brightness/contrast/hue/saturation jitter for stain variation.
``lab`` adds what another microscope does to a cell: white balance and gamma,
defocus blur, sensor noise, a downscale-upscale round trip.
Every transform is drawn per sample.
"""

from __future__ import annotations


import tensorflow as tf

LEVELS = ("none", "basic", "lab")


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


def make_augment(level: str):
    """Return a batched augmentation function for ``level`` (None for 'none')."""
    if level not in LEVELS:
        raise ValueError(f"augmentation level must be one of {LEVELS}, not {level!r}")
    if level == "none":
        return None

    def augment(x):
        x = zoom_shift(dihedral(x))
        if level == "lab":
            x = white_balance_gamma(x)
            x = colour(x, strength=1.0)
            x = defocus(x)
            x = down_up(x)
            x = sensor_noise(x)
        else:
            x = colour(x)
        return tf.clip_by_value(x, 0.0, 1.0)

    return augment


