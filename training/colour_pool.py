"""Colour statistics of unlabelled images from other labs, for ``colour_transfer`` augmentation.

    python -m training.colour_pool --images ../shared/data/bccd/images \
        ../shared/data/otherlabs/zheng1/images ../shared/data/otherlabs/zheng2/images \
        --out runs/colour_pool.npz

Only pixels' colour statistics are used (per image, per RGB channel: mean and
standard deviation in [0, 1]); no labels. Which folders went in is stored in
the file and must be disclosed in the model card when they include sets the
model is later evaluated on (the zero-shot figures are then not fully clean).
Unreadable images are listed on stderr and skipped (exit status 1); a folder with no readable
image is a usage error (exit 2) and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hematovision.commands import positive_int
from hematovision.errors import InvalidImageError
from hematovision.images import IMAGE_SUFFIXES, load_image
from hematovision.preprocessing import resize


def image_stats(image: np.ndarray) -> np.ndarray:
    """(2, 3): per-channel mean and std of an RGB uint8 image, in [0, 1]."""
    x = image.reshape(-1, 3).astype(np.float64) / 255.0
    return np.stack([x.mean(axis=0), x.std(axis=0)]).astype(np.float32)


@dataclass(frozen=True)
class Pool:
    """What a pool command read: the stacked measures, one "folder (N images)" line per folder, the files skipped."""

    values: np.ndarray
    used: list[str]
    skipped: list[str]  # "path: why" for each unreadable image (listed, not fatal)


def collect(folders, *, size: int = 128, limit: int | None = None, measure=image_stats) -> Pool:
    """``measure(image resized whole to size x size)`` for every readable image under ``folders`` (at most ``limit``
    each). A folder without one readable image raises FileNotFoundError (the message says which)."""
    values, used, skipped = [], [], []
    for folder in folders:
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        read = 0
        for f in files:
            try:
                image = load_image(f)
            except (InvalidImageError, OSError) as exc:
                skipped.append(f"{f}: {exc}")
                continue
            values.append(measure(resize(image, size, size)))
            read += 1
        if not read:
            raise FileNotFoundError(f"no readable images under {folder}: give folders of other labs' images")
        used.append(f"{folder} ({read} images)")
    return Pool(np.stack(values), used, skipped)


def report_skipped(pool: Pool) -> int:
    """List the skipped files on stderr; the exit status: 1 when any were skipped, else 0."""
    for line in pool.skipped:
        print(f"skipped (unreadable): {line}", file=sys.stderr)
    return 1 if pool.skipped else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.colour_pool", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", nargs="+", required=True, help="folders of unlabelled images (searched recursively)")
    p.add_argument("--limit", type=positive_int, help="at most N images per folder")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    try:
        pool = collect(a.images, limit=a.limit)
    except FileNotFoundError as e:
        p.error(str(e))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(a.out, stats=pool.values, sources=np.array(pool.used))
    print(f"{len(pool.values)} images -> {a.out}: " + "; ".join(pool.used))
    return report_skipped(pool)


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
