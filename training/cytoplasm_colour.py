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
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from hematovision.cells.morphology import measure
from hematovision.commands import bounded_int
from training.crosslab import labelled_cells
from training.data import read_splits

AXES = ("L", "a", "b")


def lab_of_rgb(rgb: tuple[float, float, float]) -> np.ndarray:
    """Mean RGB (0-255, sRGB) -> CIELAB (L* 0-100, a*, b*) through OpenCV's float conversion (D65)."""
    px = np.asarray(rgb, np.float32).reshape(1, 1, 3) / 255.0
    return cv2.cvtColor(px, cv2.COLOR_RGB2LAB).reshape(3).astype(np.float64)


def cytoplasm_lab(paths: list[Path]) -> tuple[np.ndarray, int]:
    """(n, 3) CIELAB of each measurable cell's mean cytoplasm colour, and how many could not be measured."""
    rows, failed = [], 0
    for path in paths:
        try:
            colour = measure(path).cytoplasm_color
        except ValueError:  # SegmentationError (no cell found) or InvalidImageError (unreadable): counted, not guessed
            colour = None
        if colour is None:
            failed += 1
            continue
        rows.append(lab_of_rgb(colour))
    return np.asarray(rows, np.float64).reshape(-1, 3), failed


def summary(lab: np.ndarray, failed: int) -> dict:
    out = {"n": int(len(lab)), "not_measured": failed}
    if len(lab):
        out.update({"mean": dict(zip(AXES, np.round(lab.mean(axis=0), 2).tolist())),
                    "std": dict(zip(AXES, np.round(lab.std(axis=0), 2).tolist()))})
    return out


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
    args = ap.parse_args(argv)
    reference = {c: summary(*cytoplasm_lab(paths)) for c, paths in pbc_sample(args.pbc, args.classes, args.per_class,
                                                                               args.seed).items()}
    labs = {}
    for folder in args.cells:
        cells = labelled_cells(folder)
        labs[folder.name] = {}
        for c in args.classes:
            stats = summary(*cytoplasm_lab([p for p, label in cells if label == c]))
            stats["distance_to_pbc"] = distances(stats, reference)
            if stats["distance_to_pbc"]:
                stats["nearest_pbc_class"] = min(stats["distance_to_pbc"], key=lambda k: stats["distance_to_pbc"][k]["overall"])
            labs[folder.name][c] = stats
    command = "python -m training.cytoplasm_colour " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {"command": command, "what": "mean cytoplasm colour (CIELAB) of each class, PBC test sample vs other labs",
              "pbc": {"folder": str(args.pbc), "split": "test", "per_class": args.per_class, "seed": args.seed,
                      "classes": reference}, "labs": labs}
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
