"""HematoVision web app: classify a blood-cell image, explain it, measure it, see it in 3D.

Run ``python app.py`` (http://127.0.0.1:7860; honours GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT). Every event is a named endpoint of the Gradio API, see
docs/app.md. The app only wires the ``hematovision`` core into a page: the
models are loaded once, here, at import; a missing model stops the start with
the core's message. Research use only; not a diagnostic device.
"""
# ruff: noqa: E402  (the start-up clock starts before the heavy imports)

import time

T0 = time.perf_counter()

import base64
import html
import re
import shutil
import tempfile
from functools import lru_cache, wraps
from pathlib import Path

import gradio as gr
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

import hematovision as hv
from hematovision import cam as cams, mesh, morphology, report
from hematovision.errors import HematoVisionError, MorphologyReferenceError, SegmentationError

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"
#: The product models: name -> what the user picks in the page.
MODEL_CHOICES = [("White-cell type (8 classes)", "wbc"), ("Leukemia stage, ALL (4 classes)", "all")]
MODELS = {name: hv.load_model(name) for _, name in MODEL_CHOICES}
#: Gradio refuses uploads above this size (the core also refuses > 40 MP images).
MAX_FILE_SIZE = "50mb"
NOTICE = ("<b>Research use only.</b> HematoVision is not a diagnostic device: its results must not be used to "
          "diagnose or treat anyone, and every result needs review by a qualified specialist.")


def _reference_for(name):
    """The normal morphology reference beside the model (the ``all`` model falls back to the white-cell one)."""
    for model in (name, "wbc"):
        path = morphology.reference_path_for(MODELS[model].spec.json_path)
        if path.exists():
            return morphology.load_reference(path)
    return None


REFERENCES = {name: _reference_for(name) for name in MODELS}
UPLOAD_DIR = Path(gr.utils.get_upload_folder())
OUTPUT_DIR = UPLOAD_DIR / "hematovision"


# --------------------------------------------------------------------------- helpers


def user_errors(fn):
    """Turn the core's input errors into a gr.Error with its message; the app keeps serving."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (HematoVisionError, ValueError) as exc:
            raise gr.Error(_public(exc), title="HematoVision could not process this file") from exc
    return wrapper


def _public(exc):
    """The error message with Gradio's upload folders removed: the user sees their file name, not our disk."""
    return re.sub(re.escape(str(UPLOAD_DIR)) + r"/[^/\s'\"]+/", "", str(exc))


def _upload_path(value):
    """The local path of an upload. Image events skip Gradio's preprocessing (so the core, not Pillow,
    reads the file and reports what is wrong with it) and receive Gradio's FileData dict. Gradio checks
    the folder only for dicts that carry its "meta" marker, so the check is made here for every request:
    a path outside Gradio's upload folder (one the client named but never uploaded) is refused."""
    if value is None:
        return None
    path = value.get("path") if isinstance(value, dict) else value
    if not path:
        raise gr.Error("The upload did not arrive; please try again.")
    resolved = Path(str(path)).resolve()
    if not resolved.is_relative_to(UPLOAD_DIR.resolve()):
        raise gr.Error("Only files uploaded to this app can be processed; please upload the image.")
    return str(resolved)


def _model(name):
    if name not in MODELS:
        raise gr.Error(f"Unknown model {name!r}; choose one of {', '.join(MODELS)}.")
    return MODELS[name]


@lru_cache(maxsize=8)
def _predict(name, path):
    """One prediction (with CAM) per model and upload: upload paths are content-addressed by Gradio."""
    return _model(name).predict(path, cam=True)


def _output_file(name):
    """A fresh path for a generated file inside Gradio's temp folder; outputs older than an hour are removed."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    for folder in OUTPUT_DIR.iterdir():
        if time.time() - folder.stat().st_mtime > 3600:
            shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=OUTPUT_DIR)) / name


def _percent(p):
    return f"{100 * p:.0f}%" if p >= 0.01 else "<1%"


def verdict_html(pred, spec):
    """The result card: the class and its calibrated confidence, or an unmistakable 'uncertain' state."""
    label = html.escape(pred.label.replace("_", " "))
    about = html.escape(spec.descriptions.get(pred.label, ""))
    if getattr(pred, "out_of_distribution", None):
        state, head = "uncertain", "Uncertain &mdash; review by a specialist"
        why = (f"This image does not look like the cells the model was trained on ({html.escape(spec.raw.get('task', spec.name))}); "
               f"its best guess, <b>{label}</b> ({_percent(pred.confidence)}), should not be trusted.")
    elif pred.uncertain:
        state, head = "uncertain", "Uncertain &mdash; review by a specialist"
        why = (f"Best guess <b>{label}</b> at {_percent(pred.confidence)} calibrated confidence, below the "
               f"{_percent(spec.uncertain_threshold)} threshold chosen on validation data. Runner-up: "
               + ", ".join(f"{html.escape(k.replace('_', ' '))} {_percent(v)}" for k, v in pred.top(3)[1:]) + ".")
    else:
        state, head = "confident", f"{label} &middot; {_percent(pred.confidence)}"
        why = f"Calibrated confidence {_percent(pred.confidence)} (threshold {_percent(spec.uncertain_threshold)})."
    icon = "&#9888;" if state == "uncertain" else "&#10003;"
    desc = f"<p class='hv-desc'>{about}</p>" if about and not getattr(pred, "out_of_distribution", None) else ""
    return (f"<div class='hv-verdict hv-{state}' role='status'><div class='hv-head'><span class='hv-icon'>{icon}</span>"
            f"{head}</div><p>{why}</p>{desc}</div>")


ABOUT = """### How to read the results
- **Calibrated confidence**: the model's probabilities after temperature scaling fitted on validation cells, so that
  of the cells shown at 90 %, about 90 % are right &mdash; on images like the training images.
- **Uncertain &mdash; review by a specialist**: the top confidence is below the threshold chosen on validation data,
  or the image looks unlike every training cell. The app shows its best guess but does not hide the doubt.
- **Grad-CAM**: the regions that drove the predicted class (red = most). It shows where the model looked, not that it is right.
- **Morphology**: classical measurements of the segmented cell beside the 5-95 % range of normal cells of that class.
- **3D**: a surface whose height follows the stain density of the segmented cell; z-stacks become an isosurface.

### Limits
The models were trained on single-cell CellaVision images from one hospital (PBC) and on ALL smear fields from another;
other microscopes, stains, magnifications and cell types reduce accuracy. **This is a research tool, not a diagnostic
device**: it has no regulatory clearance and must not be used for diagnosis or treatment decisions.
"""

PENDING_VERDICT = "<div class='hv-verdict hv-empty'>No result for this image yet.</div>"
EMPTY_VERDICT = "<div class='hv-verdict hv-empty'>Drop a stained blood-cell image, take a photo, or pick an example below.</div>"

MORPH_COLUMNS = ["feature", "value", "normal (5-95 %)", "percentile", "status"]
FEATURE_NAMES = {
    "cell_diameter_rbc": "Cell diameter (x RBC)", "nucleus_diameter_rbc": "Nucleus diameter (x RBC)",
    "nc_ratio": "N:C area ratio", "cell_circularity": "Cell circularity", "cell_eccentricity": "Cell eccentricity",
    "cell_solidity": "Cell solidity", "nucleus_circularity": "Nucleus circularity", "nucleus_solidity": "Nucleus solidity",
    "lobe_count": "Nuclear lobes", "granularity": "Cytoplasm granularity", "chromatin_texture": "Chromatin texture",
}


def range_plot(rows, ref_label):
    """Each feature's percentile in the normal reference: the grey band is the normal 5-95 % range."""
    fig, ax = plt.subplots(figsize=(6.4, 0.34 * len(rows) + 1.1), dpi=110)
    ax.axvspan(5, 95, color="#e2e8f0", zorder=0)
    ax.axvline(50, color="#94a3b8", lw=1, ls="--", zorder=1)
    y = range(len(rows))
    colours = ["#16a34a" if r.status == "normal" else "#dc2626" for r in rows]
    ax.scatter([r.percentile for r in rows], y, c=colours, s=46, zorder=3)
    ax.set_yticks(list(y), [FEATURE_NAMES.get(r.name, r.name) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"percentile among normal {ref_label}s (grey band: normal 5-95 %)", fontsize=8)
    ax.set_title("Where this cell sits in the normal range", fontsize=9, loc="left")
    ax.tick_params(axis="x", labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    plt.close(fig)
    return fig


def _inline_images(markdown, folder):
    """The card's relative PNG images (the confusion matrix) as data URIs: the page cannot fetch from models/."""
    def inline(match):
        path = folder / Path(match.group(2)).name
        if path.suffix.lower() != ".png" or not path.is_file():
            return ""
        return f"![{match.group(1)}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"
    return re.sub(r"!\[([^\]]*)\]\((?!https?:|data:)([^)\s]+)\)", inline, markdown)


def model_card(name):
    """The model card: models/<name>.md when shipped (front matter stripped), else rendered from the JSON."""
    spec = _model(name).spec
    card = spec.json_path.with_suffix(".md")
    if card.exists():
        text = card.read_text(encoding="utf-8")
        if text.startswith("---"):
            text = text.split("---", 2)[2]
        return _inline_images(text, card.parent).strip()
    raw = spec.raw
    lines = [f"## {spec.name}: {raw.get('task', '')}", "", f"**Intended use.** {raw.get('intended_use', NOTICE)}", "",
             f"Classes: {', '.join(spec.labels)}. Calibration: temperature {spec.temperature:.3f}; "
             f"'uncertain' below {_percent(spec.uncertain_threshold)} confidence."]
    test = raw.get("metrics", {}).get("test")
    if test:
        lines += ["", f"### Test split (n = {test.get('n')})", "",
                  f"Accuracy **{test['accuracy']:.3f}**, macro-F1 **{test['macro_f1']:.3f}**, ECE {test.get('ece', float('nan')):.3f}.",
                  "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
                  for c, m in test.get("per_class", {}).items()]
    prov = raw.get("provenance", {})
    if prov:
        lines += ["", "### Provenance", ""] + [f"- **{k}**: `{v}`" for k, v in prov.items() if v not in (None, "", {})]
    lines += ["", "Data sources, licences and citations: see `examples/README.md`."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- handlers (one per endpoint)


def clear_results():
    """UI only: empty the results before a new image or model is processed."""
    return None, PENDING_VERDICT, None, None, None, None, None, ""


@user_errors
def classify(image, model_name):
    """/classify: (image, model) -> (label confidences, verdict HTML, result JSON)."""
    path = _upload_path(image)
    if path is None:
        return None, EMPTY_VERDICT, None
    pred = _predict(model_name, path)
    spec = _model(model_name).spec
    result = pred.to_json() | {"model": model_name, "uncertain_threshold": spec.uncertain_threshold,
                               "description": spec.descriptions.get(pred.label, "")}
    # Out of distribution: no class headline in the confidence component (the verdict explains why).
    shown = None if pred.out_of_distribution else pred.probabilities
    return shown, verdict_html(pred, spec), result


@user_errors
def explain(image, model_name, opacity=0.45):
    """/explain: (image, model, opacity 0..1) -> Grad-CAM overlay of the predicted class, at the image's size."""
    path = _upload_path(image)
    if path is None:
        return None
    pred = _predict(model_name, path)
    if pred.cam is None:
        raise gr.Error(f"The {model_name} model has no CAM head; it cannot show where it looked.")
    return cams.overlay(hv.load_image(path), pred.cam, alpha=float(opacity))


@user_errors
def explain_trusted(image, model_name, opacity=0.45):
    """UI only: the heatmap after a classification, but none for an out-of-distribution image
    (a map drawn over a photo that is not a cell looks like an explanation); "Show heatmap" asks for it anyway."""
    path = _upload_path(image)
    if path is None or _predict(model_name, path).out_of_distribution:
        return None
    return explain(image, model_name, opacity)


@user_errors
def cell_mesh(image, model_name, colour="image"):
    """/mesh: (image, model, colour 'image'|'cam') -> .glb surface of the cell (height = stain density)."""
    path = _upload_path(image)
    if path is None:
        return None
    cam = _predict(model_name, path).cam if colour == "cam" else None
    rgb = hv.load_image(path)
    # The image scale (red-cell size) is a fact of the model's data, read from its JSON.
    scale = MODELS[model_name].spec.red_cell_px(rgb.shape)
    segmentation = morphology.segment(rgb, red_cell_px=scale) if scale else None
    surface = mesh.mesh_from_image(rgb, color=colour, cam=cam, segmentation=segmentation)
    out = _output_file("cell.glb")
    mesh.write_glb(surface, out)
    return str(out)


@user_errors
def zstack_mesh(stack):
    """/zstack_mesh: (multi-page TIFF z-stack) -> .glb isosurface."""
    if stack is None:
        return None
    stack = _upload_path(stack)
    out = _output_file(Path(stack).stem + ".glb")
    mesh.write_glb(mesh.mesh_from_zstack(stack), out)
    return str(out)


@user_errors
def measure(image, model_name):
    """/morphology: (image, model) -> (features vs normal range table, range plot, summary markdown)."""
    path = _upload_path(image)
    if path is None:
        return None, None, ""
    pred = _predict(model_name, path)
    rgb = hv.load_image(path)
    try:
        features = morphology.measure(rgb, red_cell_px=MODELS[model_name].spec.red_cell_px(rgb.shape))
    except SegmentationError as exc:  # a readable image with no stained cell: say so beside the (empty) table
        return None, None, f"**No measurement.** {_public(exc)}"
    reference = REFERENCES[model_name]
    try:
        rows = morphology.compare(features, pred.label, reference) if reference else []
    except MorphologyReferenceError as exc:
        rows, note = [], str(exc)
    else:
        note = "" if reference else "No normal reference is shipped for this model; measurements only."
    if not rows:
        table = pd.DataFrame([(FEATURE_NAMES.get(k, k), round(getattr(features, k), 3), "", "", "")
                              for k in morphology.COMPARED_FEATURES], columns=MORPH_COLUMNS)
        return table, None, note
    table = pd.DataFrame([(FEATURE_NAMES.get(r.name, r.name), round(r.value, 3), f"{r.low:.3g} - {r.high:.3g}",
                           round(r.percentile), r.status) for r in rows], columns=MORPH_COLUMNS)
    ref = rows[0].reference_label
    odd = [FEATURE_NAMES.get(r.name, r.name).lower() for r in rows if r.abnormal]
    summary = (f"Compared with normal **{ref}s** (the predicted class is *{pred.label}*"
               + (", an uncertain prediction: the reference may be the wrong one" if pred.uncertain else "") + "). "
               + (f"Outside the normal 5-95 % range: {', '.join(odd)}." if odd else "Every feature is within the normal 5-95 % range.")
               + ("" if features.nucleated else " No nucleus was found: measured as an anucleate object."))
    return table, range_plot(rows, ref), summary


def batch(files, model_name, progress=gr.Progress()):
    """/batch: (files, model) -> (per-file table, differential table, differential plot, CSV file, summary)."""
    clf = _model(model_name)
    if not files:
        raise gr.Error("Add one or more image files first.")
    rows = []
    for path in progress.tqdm(files, desc="Classifying"):
        name = Path(path).name
        try:
            rows.append(report.BatchRow.from_prediction(name, clf.predict(_upload_path(path), cam=False)))
        except (HematoVisionError, ValueError, gr.Error) as exc:
            rows.append(report.BatchRow.failed(name, _public(exc)))
    diff = report.differential(rows, clf.labels)
    csv_path = report.write_csv(rows, _output_file(f"hematovision-{model_name}-batch.csv"))
    table = pd.DataFrame([r.values() for r in rows], columns=list(report.COLUMNS)).round({"confidence": 3})
    diff_table = pd.DataFrame(report.differential_rows(diff), columns=list(report.DIFFERENTIAL_COLUMNS))
    failed = len(rows) - diff.total
    summary = (f"**{diff.total}** of {len(rows)} files classified"
               + (f"; **{diff.uncertain} uncertain**: review them with a specialist" if diff.uncertain else "")
               + (f"; {failed} could not be read (see the error column)." if failed else "."))
    return table, diff_table, diff_table, str(csv_path), summary


# --------------------------------------------------------------------------- page

THEME = gr.themes.Soft(
    primary_hue="indigo", secondary_hue="rose", neutral_hue="slate", radius_size="md",
    font=["Inter", "ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
)
CSS = """
.gradio-container {max-width: 1280px !important; margin: auto;}
#hv-header {display: flex; align-items: baseline; gap: 14px; flex-wrap: wrap; margin: 6px 0 2px;}
#hv-header h1 {font-size: 1.7rem; margin: 0; letter-spacing: -0.02em;}
#hv-header h1 span {color: #be123c;}
#hv-header p {margin: 0; color: var(--body-text-color-subdued);}
.hv-notice {background: #fff7ed; border: 1px solid #fdba74; color: #7c2d12; border-radius: 8px;
            padding: 8px 12px; font-size: 0.9rem; margin-bottom: 4px;}
.hv-verdict {border-radius: 10px; padding: 12px 16px; border: 1px solid; font-size: 0.95rem;}
.hv-verdict p {margin: 6px 0 0;}
.hv-verdict .hv-head {font-size: 1.35rem; font-weight: 700; text-transform: capitalize;}
.hv-verdict .hv-icon {margin-right: 8px;}
.hv-confident {background: #ecfdf5; border-color: #34d399; color: #064e3b;}
.hv-uncertain {background: #fffbeb; border: 2px solid #f59e0b; color: #78350f;}
.hv-uncertain .hv-head {text-transform: none;}
.hv-empty {background: var(--block-background-fill); border-style: dashed; border-color: var(--border-color-primary);
           color: var(--body-text-color-subdued);}
.hv-desc {opacity: 0.9;}
footer {margin-top: 8px;}
@media (max-width: 640px) {#hv-header h1 {font-size: 1.35rem;} .hv-verdict .hv-head {font-size: 1.15rem;}}
"""
LAUNCH_KWARGS = dict(theme=THEME, css=CSS, max_file_size=MAX_FILE_SIZE)


def _examples(folder):
    """Example rows (image, model) for a folder of examples/ named after its model."""
    return [[str(f), folder] for f in sorted((EXAMPLES_DIR / folder).glob("*.jpg"))]


def _example_captions(folder):
    """The true class of each example (its file name starts with ``<label>__``), as the gallery caption."""
    return [f.name.split("__")[0].replace("_", " ") for f in sorted((EXAMPLES_DIR / folder).glob("*.jpg"))]


with gr.Blocks(title="HematoVision - blood-cell classification", delete_cache=(3600, 3600)) as demo:
    gr.HTML("<div id='hv-header'><h1><span>&#9679;</span> HematoVision</h1>"
            "<p>Blood-cell classification with calibrated confidence, Grad-CAM, morphology and 3D.</p></div>"
            f"<div class='hv-notice' role='note'>{NOTICE}</div>")
    with gr.Tabs():
        with gr.Tab("Classify", id="classify"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=4, min_width=280):
                    image = gr.Image(label="Cell image", sources=["upload", "webcam", "clipboard"], type="filepath",
                                     image_mode=None, height=320, elem_id="cell-image")
                    model = gr.Radio(MODEL_CHOICES, value="wbc", label="Model", elem_id="model")
                with gr.Column(scale=4, min_width=280):
                    verdict = gr.HTML(EMPTY_VERDICT, elem_id="verdict")
                    label = gr.Label(label="Calibrated confidence", elem_id="label")
                    with gr.Accordion("Result as JSON", open=False):
                        details = gr.JSON(label="Prediction")
                with gr.Column(scale=4, min_width=280):
                    overlay = gr.Image(label="Grad-CAM heatmap", format="png",
                                       interactive=False, height=320, elem_id="heatmap")
                    opacity = gr.Slider(0, 1, value=0.45, step=0.05, label="Heatmap opacity",
                                        info="Red: the regions that drove the prediction most.")
                    show_cam = gr.Button("Show heatmap", size="sm", elem_id="show-cam")
            with gr.Row():
                for folder, title in (("wbc", "White cells, PBC test split"), ("all", "ALL smears, test split")):
                    with gr.Column(min_width=280):
                        gr.Examples(_examples(folder), [image, model], label=f"Examples: {title}",
                                    examples_per_page=16, visible_columns=[0], example_labels=_example_captions(folder))
        with gr.Tab("3D", id="3d") as tab3d:
            gr.Markdown("The cell from **Classify** as a surface: height follows the stain density of the segmented "
                        "cell. Drag to rotate, scroll or pinch to zoom.")
            with gr.Row(equal_height=False):
                with gr.Column(scale=3, min_width=280):
                    cell3d = gr.Model3D(label="Cell surface", height=440, camera_position=(90, 50, None), clear_color=(0.97, 0.98, 0.99, 1.0), elem_id="cell3d")
                    colour = gr.Radio([("Image colours", "image"), ("Grad-CAM heatmap", "cam")], value="image", label="Colour by")
                with gr.Column(scale=2, min_width=280):
                    stack = gr.File(label="Z-stack: multi-page TIFF (z, y, x)", file_types=[".tif", ".tiff"], type="filepath")
                    stack3d = gr.Model3D(label="Z-stack isosurface", height=340, camera_position=(-60, 60, None), clear_color=(0.97, 0.98, 0.99, 1.0), elem_id="stack3d")
        with gr.Tab("Morphology", id="morphology"):
            morph_summary = gr.Markdown("Measurements of the cell from **Classify** appear here.")
            with gr.Row(equal_height=False):
                with gr.Column(scale=5, min_width=300):
                    morph_table = gr.Dataframe(headers=MORPH_COLUMNS, label="Features vs the normal reference", interactive=False,
                                               elem_id="morph-table")
                with gr.Column(scale=4, min_width=300):
                    morph_plot = gr.Plot(label="Percentile in the normal range", show_label=False, elem_id="morph-plot")
        with gr.Tab("Batch", id="batch"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=280):
                    files = gr.File(label="Images (one cell each)", file_count="multiple", type="filepath", elem_id="batch-files")
                    batch_model = gr.Radio(MODEL_CHOICES, value="wbc", label="Model")
                    run_batch = gr.Button("Classify all", variant="primary")
                    batch_summary = gr.Markdown()
                    batch_csv = gr.File(label="CSV download", interactive=False, elem_id="batch-csv")
                with gr.Column(scale=2, min_width=280):
                    diff_plot = gr.BarPlot(x="class", y="percent", label="Differential count (%)", y_lim=[0, 100], height=300,
                                           x_label_angle=-35)
                    diff_table = gr.Dataframe(headers=list(report.DIFFERENTIAL_COLUMNS), label="Differential", interactive=False)
                    batch_table = gr.Dataframe(headers=list(report.COLUMNS), label="Per file", interactive=False)
        with gr.Tab("About", id="about"):
            gr.Markdown(ABOUT)
            card_model = gr.Radio(MODEL_CHOICES, value="wbc", label="Model card")
            card = gr.Markdown(model_card("wbc"))
    gr.Markdown(f"<center><small>HematoVision {hv.__version__} &middot; research tool, not a diagnostic device</small></center>")

    # Events: each public one is a named endpoint (docs/app.md). Image events skip preprocessing: see _upload_path.
    # A new image or model first clears every result, so a failed request never leaves the last cell's on screen.
    gr.on([image.change, model.change], clear_results, None, [label, verdict, details, overlay, cell3d, morph_table, morph_plot, morph_summary],
          queue=False, show_progress="hidden", api_visibility="private", trigger_mode="always_last") \
        .then(classify, [image, model], [label, verdict, details], api_name="classify", preprocess=False) \
        .success(explain_trusted, [image, model, opacity], overlay, preprocess=False, api_visibility="private") \
        .success(measure, [image, model], [morph_table, morph_plot, morph_summary], api_name="morphology", preprocess=False)
    show_cam.click(explain, [image, model, opacity], overlay, api_name="explain", preprocess=False)
    opacity.release(explain, [image, model, opacity], overlay, preprocess=False, api_visibility="private")
    # The mesh is built when the 3D tab is shown: a Model3D filled while its tab is hidden stays blank.
    gr.on([tab3d.select, colour.change], cell_mesh, [image, model, colour], cell3d, api_name="mesh", preprocess=False)
    stack.upload(zstack_mesh, stack, stack3d, api_name="zstack_mesh")
    run_batch.click(batch, [files, batch_model], [batch_table, diff_table, diff_plot, batch_csv, batch_summary], api_name="batch")
    card_model.change(model_card, card_model, card, api_name="model_card")

demo.queue(default_concurrency_limit=2, max_size=64)

if __name__ == "__main__":
    demo.launch(prevent_thread_lock=True, **LAUNCH_KWARGS)
    print(f"HematoVision ready in {time.perf_counter() - T0:.1f} s at {demo.local_url}", flush=True)
    demo.block_thread()
