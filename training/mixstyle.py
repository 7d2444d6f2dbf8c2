"""MixStyle (Zhou et al., "Domain generalization with MixStyle", ICLR 2021): feature-level style augmentation.

A convolutional feature map's per-channel mean and standard deviation over space carry much of an image's
"style" (stain colour, illumination, optics), its normalised pattern the content (the cell). During training,
with probability ``p`` per batch, each sample's style is mixed with another sample's:

    mu_i, sigma_i  = mean and std of x_i over H, W (per channel; no gradient flows through them)
    lam_i          ~ Beta(alpha, alpha)
    x_i'           = sigma_mix * (x_i - mu_i) / sigma_i + mu_mix,
    mu_mix         = lam_i mu_i + (1 - lam_i) mu_j,   sigma_mix = lam_i sigma_i + (1 - lam_i) sigma_j,   j = perm(i)

so the network sees each cell in styles between those of the batch, in feature space, beyond what pixel-level
colour augmentation makes. At inference the layer is the identity and has no weights: the trained network is
the plain MobileNetV2 (``strip`` copies the weights back into it), so export, TFLite and CAM do not change.
Inserted after early blocks (low-level statistics carry style, later ones the class).
"""

from __future__ import annotations

import copy

import keras
import numpy as np

DEFAULT_AFTER = ("block_2_add", "block_5_add")  # MobileNetV2's last residual outputs at strides 4 and 8


@keras.saving.register_keras_serializable(package="hematovision")
class MixStyle(keras.layers.Layer):
    """The identity at inference; in training, mixes feature statistics between the samples of a batch."""

    def __init__(self, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.p, self.alpha, self.eps = float(p), float(alpha), float(eps)

    def call(self, x, training=False):
        if not training:
            return x
        import tensorflow as tf

        batch = tf.shape(x)[0]
        mu = tf.stop_gradient(tf.reduce_mean(x, axis=[1, 2], keepdims=True))
        sigma = tf.stop_gradient(tf.sqrt(tf.math.reduce_variance(x, axis=[1, 2], keepdims=True) + self.eps))
        g1 = tf.random.gamma([batch, 1, 1, 1], self.alpha)
        g2 = tf.random.gamma([batch, 1, 1, 1], self.alpha)
        lam = g1 / (g1 + g2 + 1e-12)  # Beta(alpha, alpha) from two Gammas
        perm = tf.random.shuffle(tf.range(batch))
        mu_mix = lam * mu + (1.0 - lam) * tf.gather(mu, perm)
        sigma_mix = lam * sigma + (1.0 - lam) * tf.gather(sigma, perm)
        mixed = (x - mu) / sigma * sigma_mix + mu_mix
        return tf.cond(tf.random.uniform([]) < self.p, lambda: mixed, lambda: x)

    def get_config(self):
        return {**super().get_config(), "p": self.p, "alpha": self.alpha, "eps": self.eps}


def _rename_inputs(node, old: str, new: str):
    """A layer config's inbound_nodes with every reference to layer ``old`` pointed at ``new``."""
    if isinstance(node, dict):
        if node.get("class_name") == "__keras_tensor__" and node["config"]["keras_history"][0] == old:
            node = copy.deepcopy(node)
            node["config"]["keras_history"][0] = new
            return node
        return {k: _rename_inputs(v, old, new) for k, v in node.items()}
    if isinstance(node, (list, tuple)):  # get_config gives tuples and lists
        return [_rename_inputs(v, old, new) for v in node]
    return node


def _tensor_of(node, name: str):
    """The first serialised tensor in ``node`` that is layer ``name``'s output (its shape and dtype are reused)."""
    if isinstance(node, dict):
        if node.get("class_name") == "__keras_tensor__" and node["config"]["keras_history"][0] == name:
            return copy.deepcopy(node)
        node = list(node.values())
    if isinstance(node, (list, tuple)):
        return next((t for t in (_tensor_of(v, name) for v in node) if t is not None), None)
    return None


def _inserted_config(config: dict, after: str, layer: MixStyle) -> dict:
    layers = config["layers"]
    at = next((i for i, lc in enumerate(layers) if lc["name"] == after), None)
    if at is None:
        raise ValueError(f"the backbone has no layer {after!r} to put MixStyle after")
    tensor = _tensor_of([lc["inbound_nodes"] for lc in layers[at + 1:]], after)
    for lc in layers[at + 1:]:
        lc["inbound_nodes"] = _rename_inputs(lc["inbound_nodes"], after, layer.name)
    entry = keras.saving.serialize_keras_object(layer)
    entry["name"] = layer.name
    entry["inbound_nodes"] = [{"args": [tensor], "kwargs": {}}]
    layers.insert(at + 1, entry)
    return config


def with_mixstyle(model: keras.Model, *, after=DEFAULT_AFTER, p: float = 0.5, alpha: float = 0.1) -> keras.Model:
    """The same network and weights with MixStyle layers after the backbone layers ``after`` (for training)."""
    from .model import BACKBONE_NAME, FEATURES_NAME, LOGITS_NAME, backbone

    base = backbone(model)
    config = copy.deepcopy(base.get_config())
    for name in after:
        config = _inserted_config(config, name, MixStyle(p=p, alpha=alpha, name=f"mixstyle_after_{name}"))
    mixed_base = keras.Model.from_config(config)
    mixed_base.set_weights(base.get_weights())  # MixStyle has no weights: same list, same order
    mixed_base.name = BACKBONE_NAME
    inputs = keras.Input(model.input.shape[1:], name="image")
    fmap = keras.layers.Identity(name=FEATURES_NAME)(mixed_base(inputs))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(fmap)
    x = keras.layers.Dropout(model.get_layer("dropout").rate, name="dropout")(x)
    dense = model.get_layer(LOGITS_NAME)
    logits = keras.layers.Dense(dense.units, name=LOGITS_NAME)(x)
    out = keras.Model(inputs, logits, name=model.name)
    out.get_layer(LOGITS_NAME).set_weights(dense.get_weights())
    return out


def strip(mixed: keras.Model, plain: keras.Model) -> keras.Model:
    """``plain`` (the network without MixStyle) with ``mixed``'s trained weights; returns ``plain``."""
    weights = mixed.get_weights()
    if [w.shape for w in weights] != [w.shape for w in plain.get_weights()]:
        raise ValueError("the MixStyle model's weights do not match the plain network's")
    plain.set_weights(weights)
    return plain


def same_outputs(a: keras.Model, b: keras.Model, size: int, seed: int = 0) -> float:
    """Largest absolute logit difference between two models at inference on random inputs (a check: MixStyle is
    the identity outside training)."""
    x = np.random.default_rng(seed).uniform(-1, 1, (2, size, size, 3)).astype("float32")
    return float(np.abs(np.asarray(a(x, training=False)) - np.asarray(b(x, training=False))).max())
