"""Per-image latency, one process, the same images for every method.

Rows (all after warm-up, ``runs`` timed calls each, images cycled):

- ``tflite_net``       int8 TFLite network alone, one pass: ``model.run(x)`` on a prepared tensor, 1 interpreter thread;
- ``tflite_net_2t``    the same with 2 interpreter threads;
- ``tflite_forward``   the network as shipped, per image: ``clf.forward(x)``, i.e. the test-time-augmentation
  views (8 for a ``dihedral8`` model) in ONE batch-8 invoke, and the averaging;
- ``tflite_forward_8invokes``, ``tflite_forward_1t`` (TTA models only) the same with one invoke per view
  (``Classifier(spec, batch_views=False)``, the previous path; identical outputs), and the batch on 1 thread;
- ``tflite_predict``   the whole public path ``clf.predict(path)``: decode, resize, network, softmax, CAM, OOD,
  on the classifier's default threads (every core, as TensorFlow uses for Keras); ``tflite_predict_1t`` on 1 thread;
- ``tflite_predict_8invokes`` (TTA models only) the same with one invoke per view;
- ``tflite_predict_nocam`` the same with ``cam=False`` (what the CLI and the station do);
- ``keras_predict``    the float Keras model, ``model.predict(x, verbose=0)`` per image (what most apps do per request);
- ``keras_call``       the float Keras model called directly, ``model(x, training=False)``;
- ``keras_predict_path`` decode + resize (the same core code) + ``model.predict``: the float counterpart of ``tflite_predict``.

Grad-CAM rows: ``cam_numpy`` (the CAM step alone on the TFLite feature map, incl. upsampling to the
image), ``tflite_net_cam`` (int8 network + numpy CAM: the whole map from a tensor), ``gradcam_tape``
(``training.gradcam.grad_cam`` as written: builds the gradient model per call), ``gradcam_tape_prebuilt``
(the same GradientTape computation with the gradient model built once: the fair lower bound).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from .common import Timing, measure, model_facts


@dataclass(frozen=True)
class Ratio:
    name: str
    numerator: str
    denominator: str
    value: float  # numerator median / denominator median: how many times faster the denominator is


@dataclass(frozen=True)
class LatencyReport:
    model: str
    tflite_path: str
    keras_path: str | None
    images: int
    runs: int
    warmup: int
    tflite_threads_default: int
    tta: str | None  # the model's test-time augmentation ("dihedral8") or None
    tta_views: int  # network passes per image
    timings: tuple[Timing, ...]
    gradcam: tuple[Timing, ...]
    ratios: tuple[Ratio, ...]
    #: Share of images where the int8 TFLite and float Keras top classes agree.
    top1_agreement: float | None
    #: Mean Pearson correlation between the numpy CAM (int8) and the GradientTape Grad-CAM (float).
    cam_correlation: float | None
    notes: tuple[str, ...] = ()

    def timing(self, name: str) -> Timing | None:
        return next((t for t in (*self.timings, *self.gradcam) if t.name == name), None)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def _ratio(timings: dict[str, Timing], num: str, den: str) -> Ratio | None:
    if num in timings and den in timings and timings[den].median_ms > 0:
        return Ratio(f"{num}/{den}", num, den, timings[num].median_ms / timings[den].median_ms)
    return None


def run(clf, images: list[Path], *, keras_path: str | Path | None = None, runs: int = 200, warmup: int = 20,
        gradcam_runs: int | None = None) -> LatencyReport:
    """Measure ``clf`` (a loaded :class:`hematovision.Classifier`) and, if given, the float Keras model."""
    from hematovision.images import load_image
    from hematovision.preprocessing import prepare

    if not images:
        raise ValueError("latency needs at least one image")
    spec = clf.spec
    rgbs = [load_image(p) for p in images]
    xs = [prepare(rgb, spec.input) for rgb in rgbs]
    timer = partial(measure, runs=runs, warmup=warmup)
    views = model_facts(clf).views
    notes: list[str] = []
    t = {x.name: x for x in _tflite_rows(clf, images, xs, timer, views=views, notes=notes)}
    feats, tops = _features_and_tops(clf, xs)
    gradcam = _cam_rows(clf, rgbs, xs, feats, tops, timer)
    agreement = cam_corr = None
    if keras_path is not None:
        keras_t, keras_cam, agreement, cam_corr = _keras_rows(
            keras_path, xs, images, spec, tops, feats, clf.head_weights,
            runs=runs, warmup=warmup, gradcam_runs=gradcam_runs or runs)
        t.update({x.name: x for x in keras_t})
        gradcam.extend(keras_cam)
    else:
        notes.append("float Keras model not given: Keras rows skipped")
    return LatencyReport(
        model=spec.name, tflite_path=str(spec.tflite_path), keras_path=str(keras_path) if keras_path else None,
        images=len(images), runs=runs, warmup=warmup, tflite_threads_default=clf.model.num_threads, tta=getattr(spec, "tta", None),
        tta_views=views, timings=tuple(t.values()), gradcam=tuple(gradcam),
        ratios=_ratios({**t, **{g.name: g for g in gradcam}}, views=views), top1_agreement=agreement,
        cam_correlation=cam_corr, notes=tuple(notes))


def _tflite_rows(clf, images, xs, timer, *, views: int, notes: list[str]) -> list[Timing]:
    """The int8 rows: the network alone (1 and 2 threads), as shipped per image, and the whole ``predict`` path."""
    from hematovision.classifier import Classifier
    from hematovision.runtime import TFLiteModel

    k, spec, cores = len(xs), clf.spec, clf.model.num_threads
    one = TFLiteModel(spec.tflite_path, num_threads=1)
    rows = [timer("tflite_net", "int8 TFLite network alone, `model.run(x)`, 1 thread", lambda i: one.run(xs[i % k]))]
    two = TFLiteModel(spec.tflite_path, num_threads=2)
    rows.append(timer("tflite_net_2t", "int8 TFLite network alone, 2 threads", lambda i: two.run(xs[i % k])))
    if hasattr(clf, "forward"):
        rows.append(timer("tflite_forward", f"int8 network as shipped, per image: `clf.forward(x)`, {views} pass"
                          + ("es (TTA " + str(getattr(spec, "tta", None)) + ")" if views > 1 else "")
                          + f", {cores} thread(s) (the default: every core)", lambda i: clf.forward(xs[i % k])))
    per_view = None
    if views > 1:
        per_view = Classifier(spec, batch_views=False, num_threads=cores)
        rows += _tta_forward_rows(clf, per_view, xs, timer, views=views)
        if not clf.views_batched:
            notes.append(f"batch-{views} invoke not supported by this runtime/model: one invoke per view")
    rows.append(timer("tflite_predict", f"whole path `clf.predict(path)`: decode + resize + network + CAM + OOD, "
                      f"{cores} thread(s)", lambda i: clf.predict(images[i % k])))
    single = Classifier(spec, num_threads=1)
    rows.append(timer("tflite_predict_1t", "the same whole path on 1 interpreter thread", lambda i: single.predict(images[i % k])))
    if per_view is not None:
        rows.append(timer("tflite_predict_8invokes", "whole path `clf.predict(path)`, one invoke per TTA view",
                          lambda i: per_view.predict(images[i % k])))
    rows.append(timer("tflite_predict_nocam", "whole path `clf.predict(path, cam=False)`",
                      lambda i: clf.predict(images[i % k], cam=False)))
    return rows


def _tta_forward_rows(clf, per_view, xs, timer, *, views: int) -> list[Timing]:
    """The TTA views one invoke each (the previous path), and in one batch invoke on 2 threads."""
    from hematovision.classifier import Classifier

    k = len(xs)
    one_t = Classifier(clf.spec, num_threads=1)
    return [timer("tflite_forward_8invokes", f"the {views} TTA views one invoke each (previous path)",
                  lambda i: per_view.forward(xs[i % k])),
            timer("tflite_forward_1t", f"the {views} TTA views in one batch-{views} invoke, 1 thread",
                  lambda i: one_t.forward(xs[i % k]))]


def _features_and_tops(clf, xs) -> tuple[list[np.ndarray], list[int]]:
    """Each prepared image's last feature map (none without a feature output) and its top class, one network pass."""
    li, fi = clf.spec.outputs.logits_index, clf.spec.outputs.features_index
    feats = [clf.model.run(x)[fi][0] for x in xs] if fi is not None else []
    tops = [int(np.argmax(clf.model.run(x)[li][0])) for x in xs]
    return feats, tops


def _cam_rows(clf, rgbs, xs, feats, tops, timer) -> list[Timing]:
    """The numpy CAM step alone, and the int8 network + CAM from a tensor (none without a feature output or head)."""
    from hematovision import cam as cam_maps

    li, fi = clf.spec.outputs.logits_index, clf.spec.outputs.features_index
    if fi is None or clf.head_weights is None:
        return []
    k, w = len(xs), clf.head_weights

    def numpy_cam(i: int) -> np.ndarray:
        j = i % k
        return cam_maps.upsample(cam_maps.class_activation_map(feats[j], w, tops[j]), *rgbs[j].shape[:2])

    def net_cam(i: int) -> np.ndarray:
        out = clf.model.run(xs[i % k])
        return cam_maps.class_activation_map(out[fi][0], w, int(np.argmax(out[li][0])))

    return [timer("cam_numpy", "numpy CAM step alone (feature map x head weights, upsampled to the image)", numpy_cam),
            timer("tflite_net_cam", "int8 TFLite network + numpy CAM (map from a tensor)", net_cam)]


def _ratios(all_t: dict[str, Timing], *, views: int) -> tuple[Ratio, ...]:
    tta = views > 1
    pairs = (("keras_predict", "tflite_net", True), ("keras_predict", "tflite_forward", True),
             ("tflite_forward_8invokes", "tflite_forward", tta), ("tflite_predict_8invokes", "tflite_predict", tta),
             ("keras_call", "tflite_net", True), ("keras_predict_path", "tflite_predict", True),
             ("keras_predict_path", "tflite_predict_nocam", True), ("keras_predict_path", "tflite_predict_1t", True),
             ("gradcam_tape", "tflite_net_cam", True),
             ("gradcam_tape_prebuilt", "tflite_net_cam", True))
    return tuple(r for num, den, wanted in pairs if wanted and (r := _ratio(all_t, num, den)) is not None)


def _keras_rows(keras_path, xs, images, spec, tops, feats, head_weights, *, runs, warmup, gradcam_runs):
    import keras
    import tensorflow as tf

    from hematovision import cam as cam_maps
    from hematovision.images import load_image
    from hematovision.preprocessing import prepare
    from training.gradcam import grad_cam

    model = keras.saving.load_model(str(keras_path), compile=False)
    k = len(xs)
    rows = [
        measure("keras_predict", "float Keras `model.predict(x)` per image", lambda i: model.predict(xs[i % k], verbose=0),
                runs=runs, warmup=warmup),
        measure("keras_call", "float Keras direct call `model(x, training=False)`",
                lambda i: model(xs[i % k], training=False), runs=runs, warmup=warmup),
        measure("keras_predict_path", "decode + resize + float Keras `model.predict` (per request)",
                lambda i: model.predict(prepare(load_image(images[i % k]), spec.input), verbose=0), runs=runs, warmup=warmup),
    ]
    keras_top = [int(np.argmax(np.asarray(model(x, training=False))[0])) for x in xs]
    agreement = float(np.mean([a == b for a, b in zip(keras_top, tops)]))

    cams: list[Timing] = []
    corr = None
    try:
        model.get_layer("features")
    except ValueError:
        return rows, cams, agreement, corr
    cams.append(measure("gradcam_tape", "TF GradientTape Grad-CAM, `training.gradcam.grad_cam` as written (float)",
                        lambda i: grad_cam(model, xs[i % k]), runs=gradcam_runs, warmup=min(warmup, 5)))
    grad_model = keras.Model(model.inputs, [model.get_layer("features").output, model.output])

    def tape_cam(i: int) -> np.ndarray:
        x = tf.convert_to_tensor(xs[i % k], tf.float32)
        with tf.GradientTape() as tape:
            fmap, logits = grad_model(x, training=False)
            score = logits[:, int(tf.argmax(logits[0]))]
        alpha = tf.reduce_mean(tape.gradient(score, fmap)[0], axis=(0, 1))
        cam = tf.nn.relu(tf.reduce_sum(fmap[0] * alpha, axis=-1)).numpy()
        peak = cam.max()
        return cam / peak if peak > 0 else cam

    cams.append(measure("gradcam_tape_prebuilt", "TF GradientTape Grad-CAM, gradient model built once (float)",
                        tape_cam, runs=gradcam_runs, warmup=min(warmup, 5)))
    if feats and head_weights is not None:
        corr = float(np.nanmean([_pearson(cam_maps.class_activation_map(feats[j], head_weights, tops[j]),
                                          grad_cam(model, xs[j], tops[j])[0]) for j in range(k)]))
    return rows, cams, agreement, corr
