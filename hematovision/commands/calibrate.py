"""``python -m hematovision calibrate FIELD... [--overlay OUT.png]``: a camera's scale from its own red cells.

Every size rule of the station (PBC-scale crops, segmentation sizes, morphology
in red-cell diameters) needs the red-cell diameter in pixels of *this* camera
and objective (``station --red-cell-px``). Photograph a few fields of a normal
smear with separate red cells, at the station's magnification, and pass them
(files or folders): each field's red cells are found as circles
(``hematovision.cells.red_cells``) and the camera's diameter is the median over
the fields. Prints one JSON object: ``red_cell_px``, the fields measured and not
measured, the spread between fields, each field's value and the station option
to use. ``--overlay`` draws the circles found on the first measured field: look
at it before trusting the number. Accuracy per field (``python -m bench.red_cell_scale``):
within 15 % on 95 % of PBC images and 85 % of BCCD fields; BCCD's median reads
10 % below its annotated boxes. Exit status: 0 calibrated, 1 no field could be
measured or some input could not be read (the others are still used), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import bounded_int, fail, refuse_to_overwrite

#: Relative spread between fields above which the result is reported as unreliable.
MAX_SPREAD = 0.15
#: Fewer measured fields than this gets a warning: one field is one noisy estimate.
ADVISED_FIELDS = 3
OVERLAY_SUFFIXES = (".png", ".jpg", ".jpeg")


def add_parser(sub) -> None:
    from ..cells.red_cells import MIN_CIRCLES

    p = sub.add_parser("calibrate", help="a camera's red-cell diameter in px (for station --red-cell-px)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="FIELD", help="field images of one camera, or folders of them")
    p.add_argument("--overlay", type=Path, help="write the first measured field with its red-cell circles (.png/.jpg)")
    p.add_argument("--min-circles", type=bounded_int(1, 1000), default=MIN_CIRCLES,
                   help="fewest red-cell circles for a field to count (default: %(default)s)")
    p.set_defaults(run=run)


def _warn(text: str) -> None:
    print(f"hematovision calibrate: warning: {text}", file=sys.stderr)


def run(args) -> int:
    from ..cells.red_cells import calibrate
    from ..errors import HematoVisionError, NoRedCellsError
    from ..images import load_image
    from ._pool import expand

    items = expand(args.paths)
    if args.overlay is not None:
        if args.overlay.suffix.lower() not in OVERLAY_SUFFIXES:
            return fail(f"--overlay {args.overlay}: use a .png or .jpg file name", status=2)
        try:
            refuse_to_overwrite(args.overlay, *(i.path for i in items), what="an input image")
        except FileExistsError as exc:
            return fail(exc, status=2)
    failed = []

    def readable():  # one image in memory at a time: a folder of large fields must not fill the Pi's memory
        for item in items:
            try:
                if item.problem:
                    raise ValueError(item.problem)
                rgb = load_image(item.path)
            except (HematoVisionError, OSError, ValueError) as exc:
                failed.append(item.path)
                _warn(f"{item.path}: skipped: {exc}")
                continue
            yield str(item.path), rgb

    try:
        result = calibrate(readable(), min_circles=args.min_circles)
    except NoRedCellsError as exc:
        return fail(exc if len(failed) < len(items) else
                    "no readable image among the inputs; pass field photographs (.png/.jpg/...)")
    px = round(result.red_cell_px, 1)
    out = {"red_cell_px": px, "fields_measured": result.images_measured,
           "fields_not_measured": list(result.images_not_measured), "fields_unreadable": len(failed),
           "spread": round(result.spread, 3), "station_option": f"--red-cell-px {px:g}",
           "per_field": [{"path": name, "red_cell_px": round(v.diameter_px, 1)} for name, v in result.per_image]}
    if result.images_measured < ADVISED_FIELDS:
        _warn(f"only {result.images_measured} field(s) measured; photograph at least {ADVISED_FIELDS} for a steadier value")
    if result.images_not_measured and result.images_measured < len(result.images_not_measured):
        _warn(f"only {result.images_measured} of {result.images_measured + len(result.images_not_measured)} images "
              "show enough red cells: single-cell crops and crowded fields do not calibrate; look at --overlay before "
              "trusting the value")
    if result.spread > MAX_SPREAD:
        _warn(f"the fields disagree (spread {result.spread:.0%} of the median); check that they share one camera and "
              "objective, and look at --overlay")
    if args.overlay is not None:
        name, found = result.per_image[0]
        problem = _write_overlay(args.overlay, load_image(name), found)
        if problem:
            return fail(problem)
        out["overlay"] = str(args.overlay)
    print(json.dumps(out))
    return 1 if failed else 0


def _write_overlay(path: Path, rgb, found) -> str | None:
    """Draw ``found``'s red-cell circles (and the answer, top left) on ``rgb`` and write it to ``path``; why it could
    not be written, or None."""
    import cv2

    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    thick = max(1, round(min(rgb.shape[:2]) / 240))
    for x, y, r in found.circles:
        cv2.circle(bgr, (round(x), round(y)), round(r), (255, 128, 0), thick)
    r = found.diameter_px / 2
    cv2.circle(bgr, (round(r) + 4, round(r) + 4), round(r), (0, 200, 0), thick + 1)  # the answer, top-left
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), bgr):
            return f"--overlay {path}: could not write the image"
    except (OSError, cv2.error) as exc:
        return f"--overlay {path}: could not write the image ({exc})"
    return None
