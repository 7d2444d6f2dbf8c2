"""HematoVision web app: classify a blood-cell image, explain it, measure it, see it in 3D, review a station's cells.

Run ``python app.py`` (http://127.0.0.1:7860; honours GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT; ``--mcp`` or HEMATOVISION_MCP=1 also serves the endpoints as MCP
tools; ``--review-db PATH`` or HEMATOVISION_REVIEW_DB names the station database the
Review tab opens). Every event is a named endpoint of the Gradio API, see docs/app.md.
The page is assembled here from one module per tab (``hematovision/web/``); the
models are those of the models folder (``hematovision.registry.list_models``),
loaded once, here, at import; a missing product model stops the start with the
core's message. Gradio's usage analytics are off unless GRADIO_ANALYTICS_ENABLED=True
is set. Research use only; not a diagnostic device.
"""
# ruff: noqa: E402  (the start-up clock starts before the heavy imports)

import time

T0 = time.perf_counter()

import os

# No telemetry: Gradio reads this when it is imported and at launch; an operator may still opt in.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse
import logging
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

import hematovision as hv
from hematovision.web import about_tab
from hematovision.web import batch_tab
from hematovision.web import classify_tab
from hematovision.web import morphology_tab
from hematovision.web import review_tab
from hematovision.web import view3d_tab
from hematovision.web.about_tab import model_card  # noqa: F401 - the handlers stay importable from app
from hematovision.web.batch_tab import batch  # noqa: F401
from hematovision.web.classify_tab import classify, explain, explain_trusted
from hematovision.web.errors import Blocks, UnnamedUploadRefusal, refusal, user_errors  # noqa: F401 - the app's API
from hematovision.web.files import output_file, upload_path  # noqa: F401
from hematovision.web.imaging import ANALYSIS_SIDE, analysis_shape, downscale, draw_overlay  # noqa: F401
from hematovision.web.models import CACHE_BYTES, PREDICTIONS, STORE, Analysis, ResultCache  # noqa: F401
from hematovision.web.morphology_tab import measure
from hematovision.web.paths import OUTPUT_DIR, UPLOAD_DIR  # noqa: F401
from hematovision.web.queue import MAX_QUEUE, queue_concurrency
from hematovision.web.review_db import set_configured_db
from hematovision.web.style import CSS, KEYBOARD_JS, NOTICE, THEME
from hematovision.web.view3d_tab import cell_mesh, zstack_mesh  # noqa: F401

STORE.load()  # every model of the models folder (and the Hub's product models), once
#: Name -> loaded model (the store's own dict: a lab model added while running appears here too).
MODELS = STORE.models
#: Gradio refuses uploads above this size (the core also refuses > 40 MP images).
MAX_FILE_SIZE = "50mb"
LAUNCH_KWARGS = dict(theme=THEME, css=CSS, head=KEYBOARD_JS, max_file_size=MAX_FILE_SIZE)
#: Also serve every public endpoint as an MCP tool (needs gradio[mcp]): HEMATOVISION_MCP=1 or ``python app.py --mcp``.
MCP = os.environ.get("HEMATOVISION_MCP", "") == "1"
HEADER = ("<div id='hv-header'><h1><span>&#9679;</span> HematoVision</h1><p>Blood-cell classification with calibrated "
          f"confidence, Grad-CAM, morphology, 3D and review.</p></div><div class='hv-notice' role='note'>{NOTICE}</div>")


def clear_results():
    """UI only: empty every result (Classify, 3D, Morphology) before a new image or model is processed."""
    return {**classify_tab.cleared(classify_ui), **view3d_tab.cleared(view3d_ui), **morphology_tab.cleared(morphology_ui)}


def model_radios():
    return [classify_ui.model, batch_ui.model, about_ui.model]


def publish_models():
    """After a model joined the store: its choices for the sessions and API clients that start later (Gradio
    serves the config it made at launch, and checks a Radio's value against the choices it was built with)."""
    for radio in model_radios():
        radio.choices = STORE.choices()
    if getattr(demo, "config", None):  # launched: the page config and the API description it caches, made anew
        demo.config = demo.get_config_file()
        server = getattr(demo, "app", None)
        if server is not None:
            server.api_info, server.all_app_info, server.page_api_info = None, None, {}


def page_loaded():
    """UI only, at each page load: models dropped in the models folder since the start join the choices, and the
    Review tab offers the app's own station database when it was started with one."""
    added = STORE.refresh()
    if added:
        publish_models()
    radios = {radio: gr.Radio(choices=STORE.choices()) if added else gr.skip() for radio in model_radios()}
    return {**radios, review_ui.open_server: review_tab.server_note()}


with Blocks(title="HematoVision - blood-cell classification", delete_cache=(3600, 3600)) as demo:
    gr.HTML(HEADER)
    with gr.Tabs() as tabs:
        with gr.Tab("Classify", id="classify"):
            classify_ui = classify_tab.build()
        with gr.Tab("3D", id="3d") as tab3d:
            view3d_ui = view3d_tab.build()
        with gr.Tab("Morphology", id="morphology"):
            morphology_ui = morphology_tab.build()
        with gr.Tab("Batch", id="batch"):
            batch_ui = batch_tab.build()
        with gr.Tab("Review", id="review"):
            review_ui = review_tab.build()
        with gr.Tab("About", id="about"):
            about_ui = about_tab.build()
    gr.Markdown(f"<center><small>HematoVision {hv.__version__} &middot; research tool, not a diagnostic device</small></center>")

    # Events: each public one is a named endpoint (docs/app.md). Image events skip preprocessing: see upload_path.
    # A new image or model first clears every result, so a failed request never leaves the last cell's on screen.
    c, m = classify_ui, morphology_ui
    gr.on([c.image.change, c.model.change], clear_results, None, list(clear_results()), queue=False,
          show_progress="hidden", api_visibility="private", trigger_mode="always_last") \
        .then(classify, [c.image, c.model], [c.label, c.verdict, c.details], api_name="classify", preprocess=False) \
        .success(explain_trusted, [c.image, c.model, c.opacity], c.overlay, preprocess=False, api_visibility="private") \
        .success(measure, [c.image, c.model], [m.table, m.plot, m.summary], api_name="morphology", preprocess=False)
    c.show_cam.click(explain, [c.image, c.model, c.opacity], c.overlay, api_name="explain", preprocess=False)
    c.opacity.release(explain, [c.image, c.model, c.opacity], c.overlay, preprocess=False, api_visibility="private")
    # The mesh is built when the 3D tab is shown: a Model3D filled while its tab is hidden stays blank.
    gr.on([tab3d.select, view3d_ui.colour.change], cell_mesh, [c.image, c.model, view3d_ui.colour], view3d_ui.cell3d,
          api_name="mesh", preprocess=False)
    review_tab.wire_models(model_radios(), publish_models)
    review_tab.wire_batch(batch_ui.review, tabs)
    demo.load(page_loaded, None, [*model_radios(), review_ui.open_server], api_visibility="private", queue=False)

demo.queue(default_concurrency_limit=queue_concurrency(), max_size=MAX_QUEUE)  # measured: hematovision/web/queue.py


def launch(**options):
    """``demo.launch`` with the app's look, limits, MCP switch and upload middleware (a fresh ``app_kwargs``
    each time: Gradio adds to it)."""
    # mcp_server None: Gradio's own GRADIO_MCP_SERVER=True still switches it on.
    options = LAUNCH_KWARGS | {"mcp_server": MCP or None,
                               "app_kwargs": {"middleware": [Middleware(UnnamedUploadRefusal)]}} | options
    return demo.launch(**options)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="HematoVision web app (research use only; not a diagnostic device).")
    parser.add_argument("--mcp", action="store_true", help="also serve the endpoints as MCP tools (or HEMATOVISION_MCP=1)")
    parser.add_argument("--review-db", type=Path, metavar="PATH",
                        help="the station database the Review tab opens (or HEMATOVISION_REVIEW_DB)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args()
    if args.review_db is not None:
        set_configured_db(args.review_db)
    launch(prevent_thread_lock=True, mcp_server=(MCP or args.mcp) or None)
    print(f"HematoVision ready in {time.perf_counter() - T0:.1f} s at {demo.local_url}"
          + (f" (MCP server: {demo.local_url}gradio_api/mcp/)" if demo.mcp_server else ""), flush=True)
    demo.block_thread()
