"""``python -m hematovision classify [--model NAME_OR_PATH] [--cam-dir DIR] PATH...``

Prints one JSON object per input on stdout:
``{"path", "label", "confidence", "probabilities", "uncertain", "out_of_distribution"}``, or
``{"path", "error"}`` with a one-line reason (the run goes on). Folders expand
to the image files inside them (sorted, not recursive). Exit status: 0 all
classified, 1 some input failed or the model could not be loaded, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"}


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="classify cell images, one JSON line each", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    p.add_argument("--model", default="wbc", help="model name (wbc, all) or path to a .json/.tflite (default: wbc)")
    p.add_argument("--cam-dir", type=Path, help="write a Grad-CAM overlay PNG per input into this folder")
    p.add_argument("--threads", type=int, default=None, help="TFLite interpreter threads (default: runtime's choice)")
    p.set_defaults(run=run)


def expand(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(path)
    return out


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run(args) -> int:
    from ..classifier import load_model
    from ..errors import HematoVisionError

    try:
        clf = load_model(args.model, num_threads=args.threads)
    except (HematoVisionError, OSError) as exc:
        print(f"error: cannot load model {args.model!r}: {exc}", file=sys.stderr)
        return 1
    if args.cam_dir:
        args.cam_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for i, path in enumerate(expand(args.paths)):
        try:
            pred = clf.predict(path, cam=bool(args.cam_dir))
            if args.cam_dir:
                _write_overlay(path, pred.cam, args.cam_dir / f"{i:05d}_{path.stem}_cam.png")
        except (HematoVisionError, OSError) as exc:
            failed += 1
            _emit({"path": str(path), "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
            continue
        _emit({"path": str(path), **pred.to_json()})
    return 1 if failed else 0


def _write_overlay(path: Path, cam, out: Path) -> None:
    import cv2

    from ..cam import overlay
    from ..images import load_image

    cv2.imwrite(str(out), cv2.cvtColor(overlay(load_image(path), cam), cv2.COLOR_RGB2BGR))
