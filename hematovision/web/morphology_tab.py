"""The Morphology tab: classical measurements of the segmented cell beside the normal range of its class."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..cells import morphology# noqa: E402
from ..errors import MorphologyReferenceError, SegmentationError  # noqa: E402
from .errors import public, user_errors  # noqa: E402
from .files import upload_path  # noqa: E402
from .models import STORE, analyse  # noqa: E402

MORPH_COLUMNS = ["feature", "value", "normal (5-95 %)", "percentile", "status"]
FEATURE_NAMES = {
    "cell_diameter_rbc": "Cell diameter (x RBC)", "nucleus_diameter_rbc": "Nucleus diameter (x RBC)",
    "nc_ratio": "N:C area ratio", "cell_circularity": "Cell circularity", "cell_eccentricity": "Cell eccentricity",
    "cell_solidity": "Cell solidity", "nucleus_circularity": "Nucleus circularity", "nucleus_solidity": "Nucleus solidity",
    "lobe_count": "Nuclear lobes", "granularity": "Cytoplasm granularity", "chromatin_texture": "Chromatin texture",
}
WAITING = "Measurements of the cell from **Classify** appear here."


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


def _summary(rows, pred, features):
    ref = rows[0].reference_label
    odd = [FEATURE_NAMES.get(r.name, r.name).lower() for r in rows if r.abnormal]
    return (f"Compared with normal **{ref}s** (the predicted class is *{pred.label}*"
            + (", an uncertain prediction: the reference may be the wrong one" if pred.uncertain else "") + "). "
            + (f"Outside the normal 5-95 % range: {', '.join(odd)}." if odd else "Every feature is within the normal 5-95 % range.")
            + ("" if features.nucleated else " No nucleus was found: measured as an anucleate object."))


@user_errors
def measure(image, model_name):
    """Morphology of the segmented cell (diameters in red-cell diameters, N:C ratio, shape, lobes, texture)
    beside the normal 5-95 % range of the predicted class. Research use only, not a diagnostic device.

    Args:
        image: a stained blood-cell image; images over 1024 px on a side are measured downscaled to 1024 px.
        model_name: the model ("wbc", "all" or a lab model) whose prediction picks the normal reference.

    Returns:
        The feature table (feature, value, normal 5-95 %, percentile, status), a percentile plot and a summary.
    """
    path = upload_path(image)
    if path is None:
        return None, None, ""
    result = analyse(model_name, path)
    pred, rgb = result.prediction, result.image
    try:
        features = morphology.measure(rgb, red_cell_px=STORE.get(model_name).spec.red_cell_px(rgb.shape))
    except SegmentationError as exc:  # a readable image with no stained cell: say so beside the (empty) table
        return None, None, f"**No measurement.** {public(exc)}"
    reference = STORE.references.get(model_name)
    try:
        rows = morphology.compare(features, pred.label, reference) if reference else []
    except MorphologyReferenceError as exc:
        rows, note = [], str(exc)
    else:
        note = "" if reference else STORE.notes.get(model_name, "No normal reference for this model; measurements only.")
    if not rows:
        table = pd.DataFrame([(FEATURE_NAMES.get(k, k), round(getattr(features, k), 3), "", "", "")
                              for k in morphology.COMPARED_FEATURES], columns=MORPH_COLUMNS)
        return table, None, note
    table = pd.DataFrame([(FEATURE_NAMES.get(r.name, r.name), round(r.value, 3), f"{r.low:.3g} - {r.high:.3g}",
                           round(r.percentile), r.status) for r in rows], columns=MORPH_COLUMNS)
    return table, range_plot(rows, rows[0].reference_label), _summary(rows, pred, features)


def build():
    """Lay out the tab (inside ``gr.Tab``); returns its components. Events are wired in app.py."""
    summary = gr.Markdown(WAITING)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=300):
            table = gr.Dataframe(headers=MORPH_COLUMNS, label="Features vs the normal reference", interactive=False,
                                 elem_id="morph-table")
        with gr.Column(scale=4, min_width=300):
            plot = gr.Plot(label="Percentile in the normal range", show_label=False, elem_id="morph-plot")
    return SimpleNamespace(summary=summary, table=table, plot=plot)


def cleared(tab):
    return {tab.table: None, tab.plot: None, tab.summary: ""}
