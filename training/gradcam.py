"""Grad-CAM the textbook way (Selvaraju et al. 2017), with tf.GradientTape.

The reference that the numpy CAM of ``hematovision.cam`` is checked against:
alpha_k^c = mean_ij d y_c / d A_k(i, j);  Grad-CAM_c = ReLU(sum_k alpha_k^c A_k).
"""

from __future__ import annotations

import numpy as np


def grad_cam(model, x: np.ndarray, class_index: int | None = None, *, features_layer: str = "features") -> tuple[np.ndarray, int]:
    """``model``: a Keras classifier with a layer named ``features_layer``; ``x``: (1, H, W, 3) model input.

    Returns the (h, w) map normalised to [0, 1] and the class it explains.
    """
    import keras
    import tensorflow as tf

    grad_model = keras.Model(model.inputs, [model.get_layer(features_layer).output, model.output])
    x = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape() as tape:
        fmap, logits = grad_model(x, training=False)
        c = int(tf.argmax(logits[0])) if class_index is None else class_index
        score = logits[:, c]
    grads = tape.gradient(score, fmap)[0]
    alpha = tf.reduce_mean(grads, axis=(0, 1))
    cam = tf.nn.relu(tf.reduce_sum(fmap[0] * alpha, axis=-1)).numpy()
    peak = cam.max()
    return (cam / peak if peak > 0 else cam), c
