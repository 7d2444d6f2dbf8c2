"""The 3D tab: the classified cell as a surface (.glb), and a z-stack's isosurface."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from .. import mesh
from ..cells import morphology
from .errors import refusal, user_errors
from .files import output_file, upload_path
from .models import STORE, analyse

CLEAR_COLOUR = (0.97, 0.98, 0.99, 1.0)


@user_errors
def cell_mesh(image, model_name, colour="image"):
    """A 3D surface of the segmented cell (height follows the stain density) as a .glb file.
    Research use only, not a diagnostic device.

    Args:
        image: a stained blood-cell image; images over 1024 px on a side are analysed downscaled to 1024 px.
        model_name: the model ("wbc", "all" or a lab model) whose image scale (red-cell size) and Grad-CAM are used.
        colour: "image" (the image's colours) or "cam" (the Grad-CAM heatmap of the predicted class).

    Returns:
        The surface as a binary glTF (.glb) file.
    """
    path = upload_path(image)
    if path is None:
        return None
    if colour not in ("image", "cam"):
        raise refusal(f"colour must be 'image' or 'cam', not {colour!r}.")
    result = analyse(model_name, path)
    rgb = result.image
    # The image scale (red-cell size) is a fact of the model's data, read from its JSON.
    scale = STORE.get(model_name).spec.red_cell_px(rgb.shape)
    segmentation = morphology.segment(rgb, red_cell_px=scale) if scale else None
    cam = result.prediction.cam if colour == "cam" else None
    surface = mesh.mesh_from_image(rgb, color=colour, cam=cam, segmentation=segmentation)
    out = output_file("cell.glb")
    mesh.write_glb(surface, out)
    return str(out)


@user_errors
def zstack_mesh(stack):
    """An isosurface of a confocal or widefield z-stack as a .glb file. Research use only.

    Args:
        stack: a multi-page TIFF, one grayscale page per z-slice (z, y, x), at least 2 pages.

    Returns:
        The isosurface (coloured by intensity) as a binary glTF (.glb) file.
    """
    if stack is None:
        return None
    stack = upload_path(stack)
    out = output_file(Path(stack).stem + ".glb")
    mesh.write_glb(mesh.mesh_from_zstack(stack), out)
    return str(out)


def build():
    """Lay out the tab (inside ``gr.Tab``); returns its components. Events are wired in app.py."""
    gr.Markdown("The cell from **Classify** as a surface: height follows the stain density of the segmented "
                "cell. Drag to rotate, scroll or pinch to zoom.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=280):
            cell3d = gr.Model3D(label="Cell surface", height=440, camera_position=(90, 50, None), clear_color=CLEAR_COLOUR,
                                elem_id="cell3d")
            colour = gr.Radio([("Image colours", "image"), ("Grad-CAM heatmap", "cam")], value="image", label="Colour by")
        with gr.Column(scale=2, min_width=280):
            stack = gr.File(label="Z-stack: multi-page TIFF (z, y, x)", file_types=[".tif", ".tiff"], type="filepath")
            stack3d = gr.Model3D(label="Z-stack isosurface", height=340, camera_position=(-60, 60, None),
                                 clear_color=CLEAR_COLOUR, elem_id="stack3d")
    stack.upload(zstack_mesh, stack, stack3d, api_name="zstack_mesh")
    return SimpleNamespace(cell3d=cell3d, colour=colour, stack=stack, stack3d=stack3d)


def cleared(tab):
    return {tab.cell3d: None}
