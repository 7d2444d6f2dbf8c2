"""The Review tab's lab models: the model adapted from the verified cells, and a copy that counts only the lab's
classes (a differential scope). Both go into the app's models folder and join the model choices of every tab.
The logic lives in review_actions (adapt) and review_scope; here are the two endpoints and their controls."""

import gradio as gr

from .errors import user_errors
from .models import STORE
from .review_actions import adapt_model, adaptation_summary
from .review_scope import scope_session_model, scope_summary


def _tab():
    """The Review tab module (imported here, not at the top: it imports this module to lay out the controls)."""
    from . import review_tab

    return review_tab


def _models_changed(ui) -> dict:
    """Tell the app (new sessions and API clients get the new choices) and update this page's model radios."""
    ui.on_models_changed()
    return {radio: gr.Radio(choices=STORE.choices()) for radio in ui.model_radios}


@user_errors
def review_adapt(database, name):
    """Adapt the database's model from its verified cells (few-shot head refit) into the models folder, with
    the cross-validated accuracy before and after; the adapted model joins the model choices. Research use only.

    Args:
        database: the database id from /review_open.
        name: the adapted model's name (default <model>-lab). An earlier adaptation of that name is replaced only
            when it was made from this same database; any other model of that name (ignoring case) is refused.
    """
    tab = _tab()
    with tab._opened(database) as (db, slide):
        name, data, earlier = adapt_model(db, slide, name)
    return {tab.ui.adapt_result: adaptation_summary(name, data, earlier), **_models_changed(tab.ui)}


@user_errors
def review_scope(database, classes, name):
    """Write a copy of the database's model that counts only the lab's classes (a differential scope, e.g. a
    five-part differential) into the models folder; it joins the model choices. A cell whose first choice is another
    class is flagged for review and that choice named. Research use only.

    Args:
        database: the database id from /review_open.
        classes: the classes the lab counts (at least two of the model's classes).
        name: the scoped model's name (default <model>-scoped). An earlier scoped model of that name is replaced;
            any other model of that name (ignoring case) is refused.
    """
    tab = _tab()
    with tab._opened(database) as (_, slide):
        name, data, earlier = scope_session_model(slide, classes, name)
    return {tab.ui.scope_result: scope_summary(name, data, earlier), **_models_changed(tab.ui)}


def layout(ui) -> None:
    """The two accordions, inside the tab's layout (``ui``: the tab's components)."""
    with gr.Accordion("Adapt the model to this lab", open=False):
        ui.adapt_name = gr.Textbox(label="Adapted model name", placeholder="<model>-lab", elem_id="review-adapt-name")
        ui.adapt = gr.Button("Adapt model from verified cells", elem_id="review-adapt")
        ui.adapt_result = gr.Markdown(elem_id="review-adapt-result")
    with gr.Accordion("Count only this lab's classes", open=False):
        ui.scope_classes = gr.CheckboxGroup([], label="Classes your lab counts (e.g. a five-part differential)",
                                            elem_id="review-scope-classes")
        ui.scope_name = gr.Textbox(label="Scoped model name", placeholder="<model>-scoped", elem_id="review-scope-name")
        ui.scope = gr.Button("Write scoped model", elem_id="review-scope")
        ui.scope_result = gr.Markdown(elem_id="review-scope-result")


def wire(ui) -> None:
    """The two buttons; their outputs include ``ui.model_radios`` (set by review_tab.wire_models)."""
    ui.adapt.click(review_adapt, [ui.db, ui.adapt_name], [ui.adapt_result, *ui.model_radios], api_name="review_adapt")
    ui.scope.click(review_scope, [ui.db, ui.scope_classes, ui.scope_name], [ui.scope_result, *ui.model_radios],
                   api_name="review_scope")
