"""``python -m hematovision mesh INPUT -o OUT.glb [--color image|cam] [--spacing Z Y X] [--level L]``

A 3D mesh of a cell. A multi-page TIFF is a z-stack (z, y, x): its
isosurface is meshed at the voxel ``--spacing`` (um; default 1 1 1) and
``--level`` (fraction of the normalised intensity; default Otsu). Any other
image is a stained smear crop: a 2.5D surface over the central cell, coloured
by the image or (``--color cam``, needs ``--model``) by the classifier's
Grad-CAM. The format follows the suffix of ``-o``: .glb (glTF 2.0 binary,
what Gradio's Model3D shows), .ply or .obj. Prints one JSON line. Exit
status: 0 written, 1 the input could not be meshed, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("mesh", help="3D mesh (.glb/.ply/.obj) of a cell image or a z-stack TIFF", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, metavar="IMAGE_OR_TIFF", help="cell image, or multi-page TIFF z-stack")
    p.add_argument("-o", "--output", type=Path, required=True, help="output file: .glb, .ply or .obj")
    p.add_argument("--color", choices=("image", "cam"), default="image",
                   help="vertex colours of an image mesh: the image, or the Grad-CAM heatmap (default: image)")
    p.add_argument("--model", default="wbc", help="model for --color cam: name (wbc, all) or path (default: wbc)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), help="z-stack voxel size (um)")
    p.add_argument("--level", type=float, help="z-stack iso level in (0, 1) of the normalised intensity (default: Otsu)")
    p.add_argument("--max-triangles", type=int, default=None, help="triangle budget (default: 50000)")
    p.set_defaults(run=run)


def run(args) -> int:
    from .. import mesh as meshes
    from ..errors import HematoVisionError

    suffix = args.output.suffix.lower()
    if suffix not in meshes.WRITERS:
        print(f"error: -o {args.output}: use a .glb, .ply or .obj file name", file=sys.stderr)
        return 2
    if args.spacing is not None and any(s <= 0 for s in args.spacing):
        print("error: --spacing needs three positive numbers (z y x)", file=sys.stderr)
        return 2
    if args.level is not None and not 0.0 < args.level < 1.0:
        print("error: --level is a fraction of the normalised intensity, in (0, 1)", file=sys.stderr)
        return 2
    try:
        zstack = meshes.is_zstack(args.input) if args.input.exists() else False
        if zstack:
            if args.color == "cam":
                print("error: --color cam applies to 2D images; a z-stack is coloured by intensity", file=sys.stderr)
                return 2
            mesh = meshes.mesh_from_zstack(args.input, spacing=args.spacing, level=args.level,
                                           max_triangles=args.max_triangles)
        else:
            mesh = _image_mesh(args, meshes)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        meshes.write_mesh(mesh, args.output)
    except (HematoVisionError, ValueError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = "" if str(args.input) in message else f"{args.input}: "
        print(f"error: {where}{message}", file=sys.stderr)
        return 1
    print(json.dumps({"input": str(args.input), "output": str(args.output), "kind": "zstack" if zstack else "image",
                      "vertices": mesh.n_vertices, "faces": mesh.n_faces, "bytes": args.output.stat().st_size}))
    return 0


def _image_mesh(args, meshes):
    from ..images import load_image

    rgb = load_image(args.input)
    cam = None
    if args.color == "cam":
        from .. import load_model  # the TFLite runtime loads only here

        prediction = load_model(args.model).predict(rgb)
        cam = prediction.cam
        if cam is None:
            raise ValueError(f"model {args.model!r} gives no Grad-CAM heatmap; use --color image")
    return meshes.mesh_from_image(rgb, color=args.color, cam=cam, max_triangles=args.max_triangles)
