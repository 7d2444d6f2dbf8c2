"""The About tab: how to read the results, the limits, and each model's card."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from .classify_tab import percent
from .errors import user_errors
from .models import STORE
from .style import NOTICE

ABOUT = """### How to read the results
- **Calibrated confidence**: the model's probabilities after temperature scaling fitted on validation cells, so that
  of the cells shown at 90 %, about 90 % are right &mdash; on images like the training images.
- **Uncertain &mdash; review by a specialist**: the top confidence is below the threshold chosen on validation data,
  or the image looks unlike every training cell. The app shows its best guess but does not hide the doubt.
- **Batch warning**: when many cells of one batch (Batch tab, Review tab, station session) look unlike the training
  cells, either the whole set-up (microscope, stain, camera) differs or the smear holds many cells of a type the model
  was not trained on (for the white-cell model, blasts): have a specialist look. Either way even confident answers
  are often wrong. If the set-up is new, adapt the model to it with a few labelled cells before trusting its
  differential.
- **Grad-CAM**: the regions that drove the predicted class (red = most). It shows where the model looked, not that it is right.
- **Morphology**: classical measurements of the segmented cell beside the 5-95 % range of normal cells of that class.
- **3D**: a surface whose height follows the stain density of the segmented cell; z-stacks become an isosurface.
- **Review**: a technologist confirms or corrects every cell of a station database; the verified differential is theirs.

### Limits
The models were trained on single-cell CellaVision images from one hospital (PBC) and on ALL smear fields from another;
other microscopes, stains, magnifications and cell types reduce accuracy, a lot: on other labs' cells the white-cell
models are right far less often than on their own lab's, and many of their answers there are flagged uncertain. Their
model cards below give the measured figures ("Cross-lab accuracy"). On a new set-up, check every cell and adapt the
model with labelled cells of your own. **This is a research tool, not a diagnostic device**: it has no regulatory
clearance and must not be used for diagnosis or treatment decisions.
"""


def _inline_images(markdown, folder):
    """The card's relative PNG images (the confusion matrix) as data URIs: the page cannot fetch from models/."""
    def inline(match):
        path = folder / Path(match.group(2)).name
        if path.suffix.lower() != ".png" or not path.is_file():
            return ""
        return f"![{match.group(1)}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"
    return re.sub(r"!\[([^\]]*)\]\((?!https?:|data:)([^)\s]+)\)", inline, markdown)


def _rendered_card(spec):
    """A card from the model JSON (a lab model has no .md): task, intended use, classes, metrics, provenance."""
    raw = spec.raw
    lines = [f"## {spec.display_name} (`{spec.name}`)", "", f"**Intended use.** {raw.get('intended_use', NOTICE)}", "",
             f"Classes: {', '.join(spec.labels)}. Calibration: temperature {spec.temperature:.3f}; "
             f"'uncertain' below {percent(spec.uncertain_threshold)} confidence."]
    test = raw.get("metrics", {}).get("test")
    if test:
        lines += ["", f"### Test split (n = {test.get('n')})", "",
                  f"Accuracy **{test['accuracy']:.3f}**, macro-F1 **{test['macro_f1']:.3f}**, ECE {test.get('ece', float('nan')):.3f}.",
                  "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
                  for c, m in test.get("per_class", {}).items()]
    cv = (raw.get("adaptation") or {}).get("cross_validation")
    if cv:
        lines += ["", f"### Lab adaptation ({cv['folds']}-fold cross-validation on the lab's cells)", "",
                  f"Accuracy before {cv['before']['accuracy']:.3f}, after {cv['after']['accuracy']:.3f} "
                  f"(source model: `{raw['adaptation']['source_model']['name']}`)."]
    if spec.scope is not None:
        lines += ["", "### Lab differential scope", "",
                  f"Names only {', '.join(spec.scope.classes)}. A cell the model first calls "
                  f"{' or '.join(spec.scope.left_out(spec.labels))} is flagged for review and that first choice is named "
                  f"(source model: `{(raw['scope'].get('source_model') or {}).get('name', '?')}`; hematovision/scope.py)."]
    prov = raw.get("provenance", {})
    if prov:
        lines += ["", "### Provenance", ""] + [f"- **{k}**: `{v}`" for k, v in prov.items() if v not in (None, "", {})]
    lines += ["", "Data sources, licences and citations: see `examples/README.md`."]
    return "\n".join(lines)


@user_errors
def model_card(name):
    """The model card of a HematoVision model: intended use and limits, training data, test metrics, provenance.
    Read it before relying on a result: the models are research tools, not diagnostic devices.

    Args:
        name: the model: "wbc" (white-cell type), "all" (ALL stage) or a lab model of the models folder.

    Returns:
        The card as Markdown (models/<name>.md when shipped, else rendered from the model JSON).
    """
    spec = STORE.get(name).spec
    card = spec.json_path.with_suffix(".md")
    if not card.exists():
        return _rendered_card(spec)
    text = card.read_text(encoding="utf-8")
    if text.startswith("---"):
        text = text.split("---", 2)[2]
    return _inline_images(text, card.parent).strip()


def build():
    """Lay out the tab (inside ``gr.Tab``) and wire its event; returns its components."""
    gr.Markdown(ABOUT)
    model = gr.Radio(STORE.choices(), value=STORE.default(), label="Model card")
    card = gr.Markdown(model_card(STORE.default()))
    model.change(model_card, model, card, api_name="model_card")
    return SimpleNamespace(model=model, card=card)
