"""Consistency between two augmented views of each cell (AugMix's Jensen-Shannon term; issue 12 probe).

Hendrycks et al. 2020 ("AugMix", ICLR) add to the cross-entropy a Jensen-Shannon divergence between the class
probabilities of differently augmented views of one image, which asks the network to be *invariant* to the
augmentation rather than right on each view for its own reasons:

    JS(p1, p2) = 1/2 KL(p1 || m) + 1/2 KL(p2 || m),   m = (p1 + p2) / 2,

bounded by log 2, zero only when p1 == p2. Here the two views share the geometry (so the cell's CAM mask fits both)
and differ in the colour/optics appearance (``--augment`` level), the part of another lab's cells PBC lacks.
``training.cam_supervised --consistency W`` uses :func:`two_view_step`: loss = mean class-weighted CE over both
views + W * JS + cam_weight * mean CAM share outside the cell.
"""

from __future__ import annotations


def js_divergence(logits1, logits2):
    """Mean Jensen-Shannon divergence (nats) between softmax(logits1) and softmax(logits2), per batch."""
    import tensorflow as tf

    p1, p2 = tf.nn.softmax(logits1), tf.nn.softmax(logits2)
    log_m = tf.math.log(tf.clip_by_value(0.5 * (p1 + p2), 1e-7, 1.0))
    kl1 = tf.reduce_sum(p1 * (tf.math.log(tf.clip_by_value(p1, 1e-7, 1.0)) - log_m), axis=1)
    kl2 = tf.reduce_sum(p2 * (tf.math.log(tf.clip_by_value(p2, 1e-7, 1.0)) - log_m), axis=1)
    return tf.reduce_mean(0.5 * (kl1 + kl2))


def two_view_step(t, *, weight: float, cam_weight: float, outside_share):
    """Compiled train step on (view1, view2, mask, label) batches; returns (CE, CAM outside, accuracy, JS).

    ``t``: a ``training.cam_supervised.Trainable``; ``outside_share(feats, kernel, y, masks)`` its per-sample CAM
    share outside the cell. Both views go through the network as one batch (batch-norm sees both)."""
    import tensorflow as tf

    @tf.function
    def train_step(x1, x2, m, y):
        n = tf.shape(x1)[0]
        with tf.GradientTape() as tape:
            logits, feats = t.two(tf.concat([x1, x2], 0), training=True)
            yy, mm = tf.concat([y, y], 0), tf.concat([m, m], 0)
            loss_ce = t.weighted_ce(yy, logits)
            js = js_divergence(logits[:n], logits[n:])
            outside = tf.reduce_mean(outside_share(feats, t.kernel, yy, mm))
            loss = loss_ce + weight * js + cam_weight * outside
        grads = tape.gradient(loss, t.two.trainable_variables)
        t.optimizer.apply_gradients(zip(grads, t.two.trainable_variables))
        correct = tf.cast(tf.argmax(logits, 1, output_type=tf.int32) == tf.cast(yy, tf.int32), tf.float32)
        return loss_ce, outside, tf.reduce_mean(correct), js

    return train_step
