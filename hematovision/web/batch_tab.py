"""The Batch tab: many single-cell images at once, the differential count and a CSV; each batch is also written
as a station session (review_db.write_batch) that "Review this batch" opens in the Review tab."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from ..batch_shift import check_batch
from ..station import report
from ..station.review import suspect_line
from ..errors import HematoVisionError
from .errors import log, public, refusal, user_errors
from .files import output_file, upload_path
from .models import STORE
from .review_db import remember_batch, write_batch


def _table_cell(value):
    """A per-file table cell as the CSV writes it: confidence with 4 decimals, so page and CSV agree."""
    return f"{value:.4f}" if isinstance(value, float) else value


def _classify_files(files, clf, progress):
    """The table's rows, and (name, path, prediction, error) per file for the batch's station session."""
    rows, logged = [], []
    for path in progress.tqdm(files, desc="Classifying"):
        name = Path(path).name
        try:
            local = upload_path(path)
            pred = clf.predict(local, cam=False)
            rows.append(report.BatchRow.from_prediction(name, pred))
            logged.append((name, local, pred, None))
            continue
        except gr.Error as exc:
            rows.append(report.BatchRow.failed(name, exc.message))
        except (HematoVisionError, ValueError) as exc:
            rows.append(report.BatchRow.failed(name, public(exc)))
        logged.append((name, None, None, rows[-1].error))
    return rows, logged


def _log_for_review(logged, clf, request):
    """Write the batch as a station session for the Review tab; a failure there costs the review, not the batch."""
    db_path = None
    if any(pred is not None for _, _, pred, _ in logged):
        try:
            db_path = write_batch(logged, clf)
        except (HematoVisionError, ValueError, OSError) as exc:
            log.warning("batch: not written for review (%s)", public(exc))
    remember_batch(getattr(request, "session_hash", None), db_path)


def _summary(rows, diff, logged) -> str:
    """Counts, the uncertain and unreadable files, and a warning first when the batch as a whole looks like an
    unfamiliar set-up (hematovision/batch_shift.py: far more cells out of distribution or atypical than the training lab's)."""
    failed = len(rows) - diff.total
    if failed:
        log.warning("batch: %d of %d files could not be read", failed, len(rows))
    preds = [pred for _, _, pred, _ in logged if pred is not None]
    shift = check_batch([p.out_of_distribution for p in preds], atypical=[p.atypical for p in preds])
    outside = suspect_line(p.outside_scope for p in preds if getattr(p, "outside_scope", None))
    return ((f"**Warning:** {shift.message()}\n\n" if shift.shifted else "")
            + f"**{diff.total}** of {len(rows)} files classified"
            + (f"; **{diff.uncertain} uncertain**: review them with a specialist" if diff.uncertain else "")
            + (f"; {failed} could not be read (see the error column)." if failed else ".")
            + (f"\n\n{outside}" if outside else ""))


@user_errors
def batch(files, model_name, request: gr.Request = None, progress=gr.Progress()):
    """Classify many single-cell images and count them: a per-file table, the differential count (percent per
    class, like a manual differential) and a CSV. Unreadable files are listed with their error, not counted.
    Research use only, not a diagnostic device.

    Args:
        files: a list of image files, one cell each.
        model_name: the model: "wbc", "all" or a lab model of the models folder.

    Returns:
        The per-file table (file, label, confidence, uncertain, error), the differential table and chart data,
        the CSV file and a summary. The batch is also kept as a station session: /review_batch opens it for review.
    """
    clf = STORE.get(model_name)
    if not files:
        raise refusal("Add one or more image files first.")
    rows, logged = _classify_files(files, clf, progress)
    _log_for_review(logged, clf, request)
    diff = report.differential(rows, clf.spec.counted_labels)
    csv_path = report.write_csv(rows, output_file(f"hematovision-{model_name}-batch.csv"))
    table = pd.DataFrame([[_table_cell(v) for v in r.values()] for r in rows], columns=list(report.COLUMNS))
    diff_table = pd.DataFrame(report.differential_rows(diff), columns=list(report.DIFFERENTIAL_COLUMNS))
    summary = _summary(rows, diff, logged)
    return table, diff_table, diff_table, str(csv_path), summary


def build():
    """Lay out the tab (inside ``gr.Tab``) and wire its event; returns its components."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            files = gr.File(label="Images (one cell each)", file_count="multiple", type="filepath", elem_id="batch-files")
            model = gr.Radio(STORE.choices(), value=STORE.default(), label="Model")
            run = gr.Button("Classify all", variant="primary")
            summary = gr.Markdown()
            csv = gr.File(label="CSV download", interactive=False, elem_id="batch-csv")
            review = gr.Button("Review this batch", elem_id="batch-review")
        with gr.Column(scale=2, min_width=280):
            plot = gr.BarPlot(x="class", y="percent", label="Differential count (%)", y_lim=[0, 100], height=300,
                              x_label_angle=-35)
            differential = gr.Dataframe(headers=list(report.DIFFERENTIAL_COLUMNS), label="Differential", interactive=False)
            table = gr.Dataframe(headers=list(report.COLUMNS), label="Per file", interactive=False)
    run.click(batch, [files, model], [table, differential, plot, csv, summary], api_name="batch")
    return SimpleNamespace(files=files, model=model, run=run, summary=summary, csv=csv, review=review, plot=plot,
                           differential=differential, table=table)
