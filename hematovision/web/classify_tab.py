"""The Classify tab: the class with its calibrated confidence (or an explicit uncertain state), the Grad-CAM
overlay, and example galleries from each model's ``examples`` folder."""

from __future__ import annotations

import html
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..images import load_image
from .errors import refusal, user_errors
from .files import upload_path
from .imaging import DEFAULT_OPACITY, draw_overlay
from .inputs import opacity_value
from .models import STORE, predict

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
PENDING_VERDICT = "<div class='hv-verdict hv-empty'>No result for this image yet.</div>"
EMPTY_VERDICT = ("<div class='hv-verdict hv-empty'>Drop a stained blood-cell image, take a photo, or pick an example "
                 "below.</div>")


def percent(p):
    return f"{100 * p:.0f}%" if p >= 0.01 else "<1%"


def verdict_html(pred, spec):
    """The result card: the class and its calibrated confidence, or an unmistakable 'uncertain' state."""
    label = html.escape(pred.label.replace("_", " "))
    about = html.escape(spec.descriptions.get(pred.label, ""))
    ood = getattr(pred, "out_of_distribution", None)
    if ood:
        state, head = "uncertain", "Uncertain &mdash; review by a specialist"
        why = (f"This image does not look like the cells the model was trained on ({html.escape(spec.task or spec.name)}); "
               f"its best guess, <b>{label}</b> ({percent(pred.confidence)}), should not be trusted.")
    elif getattr(pred, "outside_scope", None):
        state, head = "uncertain", "Outside this lab's differential &mdash; review by a specialist"
        first = pred.outside_scope
        why = (f"The model's first choice is <b>{html.escape(first.replace('_', ' '))}</b> "
               f"({percent(pred.probabilities.get(first, 0.0))}), a class this lab does not count "
               f"({html.escape(', '.join(spec.scope.classes) if spec.scope else '')}); the best class it counts is <b>{label}</b> "
               f"({percent(pred.confidence)}).")
    elif pred.uncertain:
        state, head = "uncertain", "Uncertain &mdash; review by a specialist"
        runners = [(k, v) for k, v in pred.top(3) if k != pred.label][:2]
        why = (f"Best guess <b>{label}</b> at {percent(pred.confidence)} calibrated confidence, below the "
               f"{percent(spec.uncertain_threshold)} threshold chosen on validation data. Runner-up: "
               + ", ".join(f"{html.escape(k.replace('_', ' '))} {percent(v)}" for k, v in runners) + ".")
    else:
        state, head = "confident", f"{label} &middot; {percent(pred.confidence)}"
        why = f"Calibrated confidence {percent(pred.confidence)} (threshold {percent(spec.uncertain_threshold)})."
    icon = "&#9888;" if state == "uncertain" else "&#10003;"
    desc = f"<p class='hv-desc'>{about}</p>" if about and not ood else ""
    return (f"<div class='hv-verdict hv-{state}' role='status'><div class='hv-head'><span class='hv-icon'>{icon}</span>"
            f"{head}</div><p>{why}</p>{desc}</div>")


# --------------------------------------------------------------------------- handlers (one per endpoint)
# The public handlers' docstrings are their API and MCP tool descriptions (Args: one line per input).

@user_errors
def classify(image, model_name):
    """Classify a stained blood-cell image: the cell type with its calibrated confidence, or an explicit
    'uncertain' state (confidence below the model's validated threshold, or an image unlike the training cells).
    Research use only, not a diagnostic device: every result needs review by a qualified specialist.

    Args:
        image: one stained blood-cell image (JPEG, PNG, TIFF, BMP, WebP; at most 40 MP), one cell centred.
        model_name: "wbc" (white-cell type, 8 classes, PBC), "all" (B-lymphoblast ALL stage, 4 classes), or a lab model.

    Returns:
        The calibrated class confidences (none when the image is out of distribution), the result card (HTML)
        and the result as JSON (label, confidence, probabilities, uncertain, out_of_distribution, outside_scope, model,
        uncertain_threshold, description).
    """
    path = upload_path(image)
    if path is None:
        return None, EMPTY_VERDICT, None
    pred = predict(model_name, path)
    spec = STORE.get(model_name).spec
    result = pred.to_json() | {"model": model_name, "uncertain_threshold": spec.uncertain_threshold,
                               "description": spec.descriptions.get(pred.label, "")}
    # Out of distribution: no class headline in the confidence component (the verdict explains why).
    shown = None if pred.out_of_distribution else pred.probabilities
    return shown, verdict_html(pred, spec), result


@user_errors
def explain(image, model_name, opacity=DEFAULT_OPACITY):
    """Grad-CAM of the predicted class over the image: the regions that drove the prediction (red = most).
    It shows where the model looked, not that it is right. Research use only, not a diagnostic device.

    Args:
        image: the stained blood-cell image that was classified.
        model_name: the model whose prediction is explained ("wbc", "all" or a lab model).
        opacity: heatmap opacity from 0 (the image alone) to 1 (the heatmap alone); default 0.45.

    Returns:
        The overlay as a PNG image, the size of the input image.
    """
    opacity = opacity_value(opacity)
    path = upload_path(image)
    if path is None:
        return None
    pred = predict(model_name, path)
    if pred.cam is None:
        raise refusal(f"The {model_name} model has no CAM head; it cannot show where it looked.")
    return draw_overlay(load_image(path), pred.cam, opacity)


@user_errors
def explain_trusted(image, model_name, opacity=DEFAULT_OPACITY):
    """UI only: the heatmap after a classification, but none for an out-of-distribution image
    (a map drawn over a photo that is not a cell looks like an explanation); "Show heatmap" asks for it anyway."""
    path = upload_path(image)
    if path is None or predict(model_name, path).out_of_distribution:
        return None
    return explain(image, model_name, opacity)


# --------------------------------------------------------------------------- layout


def example_sets():
    """(model name, title, files) per examples folder named by a model's JSON (``examples``); one gallery per folder."""
    sets, seen = [], set()
    for name in STORE.names():
        spec = STORE.models[name].spec
        folder = EXAMPLES_DIR / spec.examples if spec.examples else None
        if folder is None or folder in seen or not folder.is_dir():
            continue
        seen.add(folder)
        files = sorted(folder.glob("*.jpg"))
        if files:
            sets.append((name, spec.display_name, files))
    return sets


def caption(path):
    """The true class of an example (its file name starts with ``<label>__``), as the gallery caption."""
    return path.name.split("__")[0].replace("_", " ")


def build():
    """Lay out the tab (inside ``gr.Tab``); returns its components. Events are wired in app.py."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=280):
            image = gr.Image(label="Cell image", sources=["upload", "webcam", "clipboard"], type="filepath",
                             image_mode=None, height=320, elem_id="cell-image")
            model = gr.Radio(STORE.choices(), value=STORE.default(), label="Model", elem_id="model")
        with gr.Column(scale=4, min_width=280):
            verdict = gr.HTML(EMPTY_VERDICT, elem_id="verdict")
            label = gr.Label(label="Calibrated confidence", elem_id="label")
            with gr.Accordion("Result as JSON", open=False):
                details = gr.JSON(label="Prediction")
        with gr.Column(scale=4, min_width=280):
            overlay = gr.Image(label="Grad-CAM heatmap", format="png", interactive=False, height=320, elem_id="heatmap")
            opacity = gr.Slider(0, 1, value=DEFAULT_OPACITY, step=0.05, label="Heatmap opacity",
                                info="Red: the regions that drove the prediction most.")
            show_cam = gr.Button("Show heatmap", size="sm", elem_id="show-cam")
    with gr.Row():
        for name, title, files in example_sets():
            with gr.Column(min_width=280):
                gr.Examples([[str(f), name] for f in files], [image, model], label=f"Examples: {title}",
                            examples_per_page=16, visible_columns=[0], example_labels=[caption(f) for f in files])
    return SimpleNamespace(image=image, model=model, verdict=verdict, label=label, details=details, overlay=overlay,
                           opacity=opacity, show_cam=show_cam)


def cleared(tab):
    """The tab's results emptied (before a new image or model is processed)."""
    return {tab.label: None, tab.verdict: PENDING_VERDICT, tab.details: None, tab.overlay: None}
