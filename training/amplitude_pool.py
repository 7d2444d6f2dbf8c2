"""Fourier amplitude spectra of unlabelled images from other labs, for ``amplitude_mix`` augmentation.

    python -m training.amplitude_pool --images ../shared/data/bccd/images \
        ../shared/data/otherlabs/zheng1/images ../shared/data/otherlabs/zheng2/images \
        --size 128 --out runs/amplitude_pool.npz

Each image is resized whole to ``size`` x ``size`` (as the classifier sees an
upload) and its per-channel 2-D DFT amplitude |F(u, v)| is kept; no labels, no
phase (the phase carries where things are, the amplitude how sharp, noisy,
bright and coloured they look). The folders used are stored in the file and
must be disclosed in the model card when they include sets the model is later
evaluated on (the zero-shot figures are then not fully clean), as for
``training.colour_pool``.
Unreadable images are listed on stderr and skipped (exit status 1); a folder with no readable
image is a usage error (exit 2) and nothing is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hematovision.commands import positive_int

from . import colour_pool


def amplitude_spectrum(image: np.ndarray) -> np.ndarray:
    """(3, H, W) float32: |DFT| per RGB channel of an (H, W, 3) uint8 image, pixels scaled to [0, 1]."""
    x = image.astype(np.float32) / 255.0
    return np.abs(np.fft.fft2(np.moveaxis(x, -1, 0))).astype(np.float32)


def collect(folders, *, size: int = 128, limit: int | None = None) -> colour_pool.Pool:
    """Every readable image under ``folders`` resized whole to size x size: its amplitude spectrum (and what was read)."""
    return colour_pool.collect(folders, size=size, limit=limit, measure=amplitude_spectrum)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.amplitude_pool", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", nargs="+", required=True, help="folders of unlabelled images (searched recursively)")
    p.add_argument("--size", type=int, default=128, help="the model's input size (default: %(default)s)")
    p.add_argument("--limit", type=positive_int, help="at most N images per folder")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.size < 8:
        p.error(f"--size must be at least 8 pixels, not {a.size}")
    try:
        pool = collect(a.images, size=a.size, limit=a.limit)
    except FileNotFoundError as e:
        p.error(str(e))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    # float16 halves the file; amplitudes span ~1e-3 .. size^2 (the DC term), inside float16's range.
    np.savez(a.out, amplitude=pool.values.astype(np.float16), size=a.size, sources=np.array(pool.used))
    print(f"{len(pool.values)} images at {a.size} px -> {a.out}: " + "; ".join(pool.used))
    return colour_pool.report_skipped(pool)


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
