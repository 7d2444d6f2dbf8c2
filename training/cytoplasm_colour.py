"""Where a lab's stain puts each class's cytoplasm colour, beside the PBC training lab's: a cross-lab diagnostic.

    python -m training.cytoplasm_colour --pbc ../shared/data/pbc --cells ../shared/data/otherlabs/zheng1 \
        --classes neutrophil eosinophil --out reports/cytoplasm_colour_zheng1.json

Each cell goes through the core's own measurement (``hematovision.cells.morphology.measure``: the segmentation's
cell minus its nucleus), whose mean cytoplasm RGB is converted to CIELAB (D65, L* 0-100; a* > 0 is magenta-red,
b* < 0 blue). PBC cells are a seeded sample of its ``test`` split (``--per-class``), every cell of the other
folders is used. Reported per source and class: n measured, n the segmentation could not measure, and the mean
and standard deviation of L*, a*, b*; plus, per other-lab class, the distance (in PBC standard deviations, per
axis and overall) to each PBC class's mean, and which PBC class's colour it is nearest to.

Why: on zheng1 the zero-shot model calls neutrophils eosinophils, how many depending on the training seed
(docs/crosslab.md). If the stain puts neutrophil cytoplasm where PBC's eosinophils are, colour points the model the
wrong way and only granule texture and nucleus shape can tell the two apart.

A colour is only as good as the segmentation it is read in, so each source and class also reports the median
share of the frame the segmented cell covers, and ``--sheet PATH`` draws the first ``--sheet-cells`` cells of each
(nucleus blue, cytoplasm green) to look at before trusting a number. On zheng1's tight crops the core's
segmentation finds a nucleus fragment, not the cell (docs/crosslab.md), so its figures there are not cytoplasm.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hematovision.cells.morphology import measure
from hematovision.cells.segmentation import segment
from hematovision.commands import bounded_int
from hematovision.images import load_image
from training.crosslab import labelled_cells
from training.data import read_splits

AXES = ("L", "a", "b")


def lab_of_rgb(rgb: tuple[float, float, float]) -> np.ndarray:
    """Mean RGB (0-255, sRGB) -> CIELAB (L* 0-100, a*, b*) through OpenCV's float conversion (D65)."""
    px = np.asarray(rgb, np.float32).reshape(1, 1, 3) / 255.0
    return cv2.cvtColor(px, cv2.COLOR_RGB2LAB).reshape(3).astype(np.float64)


@dataclass(frozen=True)
class Measured:
    """The cells of one source and class that could be measured: CIELAB (n, 3), the segmented cell's share of its
    frame (n,), the first ``keep`` overlays for the check sheet; and how many could not be measured."""

    lab: np.ndarray
    cell_share: np.ndarray
    overlays: list
    failed: int


def overlay(rgb: np.ndarray, seg) -> np.ndarray:
    """The image with the segmentation drawn on it: nucleus tinted blue, cytoplasm green."""
    out = rgb.astype(np.float32)
    nucleus = seg.nucleus_mask & seg.cell_mask
    out[nucleus] = 0.5 * out[nucleus] + (0, 0, 127)
    out[seg.cell_mask & ~nucleus] = 0.5 * out[seg.cell_mask & ~nucleus] + (0, 127, 0)
    return np.clip(out, 0, 255).astype(np.uint8)


def measure_cells(paths: list[Path], *, keep: int = 0) -> Measured:
    """Segment and measure each cell once (the core's path: ``segment`` then ``measure``)."""
    rows, shares, overlays, failed = [], [], [], 0
    for path in paths:
        try:
            rgb = load_image(path)
            seg = segment(rgb)
            colour = measure(rgb, segmentation=seg).cytoplasm_color
        except ValueError:  # SegmentationError (no cell found) or InvalidImageError (unreadable): counted, not guessed
            colour = None
        if colour is None:
            failed += 1
            continue
        rows.append(lab_of_rgb(colour))
        shares.append(float(seg.cell_mask.sum()) / seg.cell_mask.size)
        if len(overlays) < keep:
            overlays.append(np.concatenate([rgb, overlay(rgb, seg)], axis=0))
    return Measured(np.asarray(rows, np.float64).reshape(-1, 3), np.asarray(shares), overlays, failed)


def summary(m: Measured) -> dict:
    out = {"n": int(len(m.lab)), "not_measured": m.failed}
    if len(m.lab):
        out.update({"mean": dict(zip(AXES, np.round(m.lab.mean(axis=0), 2).tolist())),
                    "std": dict(zip(AXES, np.round(m.lab.std(axis=0), 2).tolist())),
                    "segmented_cell_share_of_frame_median": round(float(np.median(m.cell_share)), 4)})
    return out


def write_sheet(path: Path, rows: dict[str, list], *, tile: int = 96) -> Path:
    """One row per source/class: each kept cell as image over overlay, ``tile`` px wide, the row's name on the left."""
    lines = []
    width = max((len(v) for v in rows.values()), default=0)
    for name, tiles in rows.items():
        cells = [cv2.resize(t, (tile, 2 * tile), interpolation=cv2.INTER_AREA) for t in tiles]
        cells += [np.full((2 * tile, tile, 3), 255, np.uint8)] * (width - len(cells))
        caption = np.full((2 * tile, 2 * tile, 3), 255, np.uint8)
        for i, word in enumerate(name.split()):
            cv2.putText(caption, word, (4, 24 + 22 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        lines.append(np.concatenate([caption, *cells], axis=1))
    if not lines:
        raise ValueError("no measured cells to draw")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(lines, axis=0), cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}: check that its folder is writable")
    return path


def pbc_sample(pbc: Path, classes: list[str], per_class: int, seed: int) -> dict[str, list[Path]]:
    """A seeded sample of ``per_class`` test-split images of each class (all of them where there are fewer)."""
    rows = read_splits(pbc)
    rng = np.random.default_rng(seed)
    sample = {}
    for c in classes:
        paths = [pbc / r["path"] for r in rows if r["label"] == c and r["split"] == "test"]
        if not paths:
            raise FileNotFoundError(f"{pbc}/splits.csv has no test images labelled {c!r}")
        pick = rng.choice(len(paths), min(per_class, len(paths)), replace=False)
        sample[c] = [paths[i] for i in sorted(pick)]
    return sample


def distances(stats: dict, reference: dict) -> dict:
    """Each PBC class: |mean difference| / that PBC class's std per axis, and their root mean square."""
    out = {}
    for c, ref in reference.items():
        if "mean" not in stats or "mean" not in ref:
            continue
        z = {a: abs(stats["mean"][a] - ref["mean"][a]) / max(ref["std"][a], 1e-6) for a in AXES}
        out[c] = {**{a: round(v, 2) for a, v in z.items()}, "overall": round(float(np.sqrt(np.mean(np.square(list(z.values()))))), 2)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.cytoplasm_colour", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pbc", type=Path, required=True, help="the PBC data folder (splits.csv)")
    ap.add_argument("--cells", type=Path, nargs="+", required=True, help="labelled other-lab folders (DIR/<label>/<image>)")
    ap.add_argument("--classes", nargs="+", required=True, help="the classes to compare (folder names, PBC labels)")
    ap.add_argument("--per-class", type=bounded_int(1, 100000), default=120, help="PBC test cells sampled per class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sheet", type=Path, help="also draw the segmentation of the first --sheet-cells cells of each "
                    "source and class into this image (.jpg/.png), to check what the colours were read from")
    ap.add_argument("--sheet-cells", type=bounded_int(1, 50), default=8)
    args = ap.parse_args(argv)
    if args.sheet and args.sheet.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        ap.error(f"--sheet {args.sheet}: use a .jpg or .png name")
    keep = args.sheet_cells if args.sheet else 0
    sheet = {}
    reference = {}
    for c, paths in pbc_sample(args.pbc, args.classes, args.per_class, args.seed).items():
        m = measure_cells(paths, keep=keep)
        reference[c], sheet[f"PBC {c}"] = summary(m), m.overlays
    labs = {}
    for folder in args.cells:
        cells = labelled_cells(folder)
        labs[folder.name] = {}
        for c in args.classes:
            m = measure_cells([p for p, label in cells if label == c], keep=keep)
            stats, sheet[f"{folder.name} {c}"] = summary(m), m.overlays
            stats["distance_to_pbc"] = distances(stats, reference)
            if stats["distance_to_pbc"]:
                stats["nearest_pbc_class"] = min(stats["distance_to_pbc"], key=lambda k: stats["distance_to_pbc"][k]["overall"])
            labs[folder.name][c] = stats
    command = "python -m training.cytoplasm_colour " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {"command": command, "what": "mean cytoplasm colour (CIELAB) of each class, PBC test sample vs other labs",
              "pbc": {"folder": str(args.pbc), "split": "test", "per_class": args.per_class, "seed": args.seed,
                      "classes": reference}, "labs": labs}
    if args.sheet:
        report["sheet"] = str(write_sheet(args.sheet, {k: v for k, v in sheet.items() if v}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for name, per in labs.items():
        for c, s in per.items():
            if "mean" in s:
                print(f"{name} {c}: n={s['n']} L*a*b* {s['mean']} nearest PBC colour: {s.get('nearest_pbc_class')}")
    print(args.out)
    return 0


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
