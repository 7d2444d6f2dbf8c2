"""``python -m hematovision mesh INPUT -o OUT.glb [--color image|cam] [--spacing Z Y X] [--level L] [--engine E]``

A 3D mesh of a cell. A multi-page TIFF is a z-stack (z, y, x): its layout
and size are checked from the header first (one plane per page, one z axis,
at most 2^28 voxels; see hematovision.mesh.zstack), it is reduced to the analysis
resolution while read (at most 256 px in-plane), and its isosurface is
meshed at the voxel ``--spacing`` (um) and ``--level``
(fraction of the normalised intensity; default Otsu). Any other
image is a stained smear crop: a 2.5D surface over the central cell, coloured
by the image or (``--color cam``, needs ``--model``) by the classifier's
Grad-CAM. A mesh over ``--max-triangles`` is decimated by ``--engine``:
``auto`` uses Open3D's quadric decimation where Open3D imports and numpy
vertex clustering otherwise (docs/mesh.md); a z-stack is then
Taubin-smoothed. The format follows
the suffix of ``-o``: .glb (glTF 2.0 binary, what Gradio's Model3D shows),
.ply or .obj. Prints one JSON line, with the engine that ran, whether the
surface is watertight and its enclosed volume. Exit status: 0 written, 1 the
input could not be meshed, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from . import add_model_argument, fail


def add_parser(sub) -> None:
    from ..mesh import MAX_TRIANGLES
    from ..mesh.isosurface import UNIT_SPACING
    from ..mesh.post import ENGINES, MIN_TRIANGLES

    p = sub.add_parser("mesh", help="3D mesh (.glb/.ply/.obj) of a cell image or a z-stack TIFF", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, metavar="IMAGE_OR_TIFF", help="cell image, or multi-page TIFF z-stack")
    p.add_argument("-o", "--output", type=Path, required=True, help="output file: .glb, .ply or .obj")
    p.add_argument("--color", choices=("image", "cam"), default="image",
                   help="vertex colours of an image mesh: the image, or the Grad-CAM heatmap (default: %(default)s)")
    add_model_argument(p, use=" for --color cam")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), default=UNIT_SPACING,
                   help=f"z-stack voxel size in um (default: {' '.join(f'{s:g}' for s in UNIT_SPACING)})")
    p.add_argument("--level", type=float, help="z-stack iso level in (0, 1) of the normalised intensity (default: Otsu)")
    p.add_argument("--max-triangles", type=int, default=MAX_TRIANGLES,
                   help=f"triangle budget, at least {MIN_TRIANGLES} (default: %(default)s)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="decimation to the budget: open3d (quadric), numpy (clustering), or auto (open3d when it "
                        "imports) (default: %(default)s)")
    p.set_defaults(run=run)


def usage_problem(args) -> str | None:
    """What is wrong with the options (exit status 2), or None."""
    from .. import mesh as meshes
    from ..mesh.post import MIN_TRIANGLES

    if args.output.suffix.lower() not in meshes.WRITERS:
        return f"-o {args.output}: use a .glb, .ply or .obj file name"
    if any(s <= 0 for s in args.spacing):
        return "--spacing needs three positive numbers (z y x)"
    if args.level is not None and not 0.0 < args.level < 1.0:
        return "--level is a fraction of the normalised intensity, in (0, 1)"
    if args.max_triangles < MIN_TRIANGLES:
        return f"--max-triangles must be at least {MIN_TRIANGLES}"
    return None


def run(args) -> int:
    from ..mesh import zstack as stacks
    from ..errors import HematoVisionError

    problem = usage_problem(args)
    if problem:
        return fail(problem, status=2)
    try:
        is_zstack = stacks.is_zstack(args.input)
        if is_zstack and args.color == "cam":
            return fail("--color cam applies to 2D images; a z-stack is coloured by intensity", status=2)
        result, stack = _mesh(args, is_zstack=is_zstack)
    except (HematoVisionError, ValueError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return fail(("" if str(args.input) in message else f"{args.input}: ") + message)
    mesh = result.mesh
    line = {"input": str(args.input), "output": str(args.output), "kind": "image" if stack is None else "zstack",
            "vertices": mesh.n_vertices, "faces": mesh.n_faces, "bytes": args.output.stat().st_size,
            **result.summary()}  # the engine that ran, the steps, watertight, volume
    if stack is not None:  # the voxels read, and those meshed (the analysis resolution)
        line.update(voxels=list(stack.source_shape), analysis_voxels=list(stack.voxels.shape))
    print(json.dumps(line))
    return 0


def _mesh(args, *, is_zstack: bool):
    """Mesh the input and write it to ``args.output``: (the mesh result, the z-stack or None for an image)."""
    from .. import mesh as meshes
    from ..mesh import isosurface
    from ..mesh import surface
    from ..mesh import zstack as stacks

    stack = None
    if is_zstack:
        stack = stacks.load_zstack(args.input)
        options = replace(isosurface.ZSTACK_OPTIONS, decimate_to=args.max_triangles, engine=args.engine)
        result = isosurface.zstack_surface(stack, spacing=args.spacing, level=args.level, options=options)
    else:
        result = _image_mesh(args, surface)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    meshes.write_mesh(result.mesh, args.output)
    return result, stack


def _image_mesh(args, surface):
    from ..images import load_image

    rgb = load_image(args.input)
    cam = None
    if args.color == "cam":
        from .. import load_model  # the TFLite runtime loads only here

        prediction = load_model(args.model).predict(rgb)
        cam = prediction.cam
        if cam is None:
            raise ValueError(f"model {args.model!r} gives no Grad-CAM heatmap; use --color image")
    options = replace(surface.IMAGE_OPTIONS, decimate_to=args.max_triangles, engine=args.engine)
    return surface.image_surface(rgb, color=args.color, cam=cam, options=options)
