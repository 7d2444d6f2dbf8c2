"""Colour statistics of unlabelled images from other labs, for ``colour_transfer`` augmentation.

    python -m training.colour_pool --images ../shared/data/bccd/images \
        ../shared/data/otherlabs/zheng1/images ../shared/data/otherlabs/zheng2/images \
        --out runs/colour_pool.npz

Only pixels' colour statistics are used (per image, per RGB channel: mean and
standard deviation in [0, 1]); no labels. Which folders went in is stored in
the file and must be disclosed in the model card when they include sets the
model is later evaluated on (the zero-shot figures are then not fully clean).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from hematovision.images import IMAGE_SUFFIXES, load_image
from hematovision.preprocessing import resize


def image_stats(image: np.ndarray) -> np.ndarray:
    """(2, 3): per-channel mean and std of an RGB uint8 image, in [0, 1]."""
    x = image.reshape(-1, 3).astype(np.float64) / 255.0
    return np.stack([x.mean(axis=0), x.std(axis=0)]).astype(np.float32)


def collect(folders, *, size: int = 128, limit: int | None = None, measure=image_stats) -> tuple[np.ndarray, list[str]]:
    """``measure(image resized whole to size x size)`` for every image under ``folders`` (at most ``limit`` each),
    stacked, and one "folder (N images)" line per folder."""
    values, used = [], []
    for folder in folders:
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        if not files:
            raise FileNotFoundError(f"no images under {folder}: give folders of other labs' images")
        values += [measure(resize(load_image(f), size, size)) for f in files]
        used.append(f"{folder} ({len(files)} images)")
    return np.stack(values), used


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.colour_pool", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", nargs="+", required=True, help="folders of unlabelled images (searched recursively)")
    p.add_argument("--limit", type=int, help="at most N images per folder")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    stats, used = collect(a.images, limit=a.limit)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(a.out, stats=stats, sources=np.array(used))
    print(f"{len(stats)} images -> {a.out}: " + "; ".join(used))
    return 0


if __name__ == "__main__":
    sys.exit(main())
