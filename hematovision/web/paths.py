"""Where the app reads uploads and writes its outputs: Gradio's upload folder, and folders inside it."""

from pathlib import Path

import gradio as gr

#: Gradio's upload folder: the only place the handlers open files from.
UPLOAD_DIR = Path(gr.utils.get_upload_folder())
#: Generated files (.glb, .csv, ...); each request's folder is removed after an hour.
OUTPUT_DIR = UPLOAD_DIR / "hematovision"
#: Working copies of uploaded station databases (not removed with the outputs: they hold reviews; see review_db).
REVIEW_DIR = UPLOAD_DIR / "hematovision-review"
