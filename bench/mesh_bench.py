"""Mesh timings: a 160 px cell image -> 2.5D mesh, the 60x60x50 z-stack -> isosurface.

    python -m bench.mesh_bench [--data DIR] [--runs 20] [--json OUT]

Times the whole call (decode + segmentation + height field + triangulation for
the image; TIFF read + normalise + blur + marching cubes + Taubin + colours for
the stack) and, separately, writing the .glb. Images come from the PBC test
split under ``--data`` (default: $HEMATOVISION_DATA, else ../shared/data
beside the checkout), the stack from ``zstack/nucleus.tif`` there; without
them, a synthetic 160 px cell and a synthetic 60x60x50 ball stack are used.
Targets (the issue): image <= 300 ms, stack <= 1 s on the development machine.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench.common import Timing, default_data_dir, idleness, machine, time_calls
from hematovision import mesh as meshes
from hematovision.commands import write_json
from hematovision.images import load_image

ZSTACK_SPACING = (0.29, 0.26, 0.26)  # um, as published for cells3d
TARGET_MS = {"image_mesh": 300.0, "zstack_mesh": 1000.0}


def pbc_images(data: Path, n: int) -> list[Path]:
    splits = data / "pbc" / "splits.csv"
    if not splits.is_file():
        return []
    with open(splits, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test" and r["label"] != "platelet"]
    return [data / "pbc" / r["path"] for r in rows[:: max(1, len(rows) // n)][:n]]


def synthetic_inputs():
    from tests._data import synthetic_cell

    axes = [np.arange(n) - (n - 1) / 2 for n in (60, 60, 50)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    ball = ((z / 20) ** 2 + (y / 18) ** 2 + (x / 16) ** 2 <= 1).astype(np.uint16) * 30000 + 3000
    return [synthetic_cell(seed=i)[0] for i in range(4)], ball


def run(data: Path, runs: int) -> dict:
    images = pbc_images(data, runs)
    stack_path = data / "zstack" / "nucleus.tif"
    synth_images, synth_stack = synthetic_inputs()
    image_inputs = images or synth_images
    stack_input = stack_path if stack_path.is_file() else synth_stack

    timings, sizes = [], {}
    t = time_calls(lambda i: meshes.mesh_from_image(image_inputs[i % len(image_inputs)]), runs=runs, warmup=2)
    timings.append(Timing.from_samples("image_mesh", "160 px cell image -> 2.5D mesh (file in, Mesh out)", t))
    decoded = [load_image(p) for p in image_inputs]
    t = time_calls(lambda i: meshes.mesh_from_image(decoded[i % len(decoded)]), runs=runs, warmup=1)
    timings.append(Timing.from_samples("image_mesh_decoded", "same, from a decoded array", t))
    t = time_calls(lambda i: meshes.mesh_from_zstack(stack_input, spacing=ZSTACK_SPACING), runs=max(5, runs // 2), warmup=1)
    timings.append(Timing.from_samples("zstack_mesh", "60x60x50 z-stack -> isosurface (TIFF in, Mesh out)", t))

    image_mesh = meshes.mesh_from_image(image_inputs[0])
    stack_mesh = meshes.mesh_from_zstack(stack_input, spacing=ZSTACK_SPACING)
    with tempfile.TemporaryDirectory() as tmp:
        for name, mesh in (("image", image_mesh), ("zstack", stack_mesh)):
            path = Path(tmp) / f"{name}.glb"
            t = time_calls(lambda i, m=mesh, p=path: meshes.write_glb(m, p), runs=10, warmup=1)
            timings.append(Timing.from_samples(f"{name}_glb_write", f"write the {name} mesh as .glb", t))
            sizes[name] = {"vertices": mesh.n_vertices, "faces": mesh.n_faces, "glb_bytes": path.stat().st_size}
    return {
        "machine": asdict(machine()),
        "idle": asdict(idleness(0.5)),
        "inputs": {"images": "PBC test split" if images else "synthetic", "zstack": str(stack_input) if isinstance(
            stack_input, Path) else "synthetic 60x60x50 ellipsoid"},
        "timings": [asdict(x) for x in timings],
        "meshes": sizes,
        "targets_ms": TARGET_MS,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.mesh_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="shared data folder (pbc/, zstack/)")
    p.add_argument("--runs", type=int, default=20, help="timed calls per measurement (default: %(default)s)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    result = run(args.data or default_data_dir(), args.runs)
    print(f"{'measurement':22s} {'median ms':>10s} {'p95 ms':>8s}  (n)")
    ok = True
    for t in result["timings"]:
        target = TARGET_MS.get(t["name"])
        flag = "" if target is None else ("  <= target %.0f ms" % target if t["median_ms"] <= target else "  OVER target")
        ok &= target is None or t["median_ms"] <= target
        print(f"{t['name']:22s} {t['median_ms']:10.1f} {t['p95_ms']:8.1f}  ({t['n']}){flag}")
    for name, m in result["meshes"].items():
        print(f"{name} mesh: {m['vertices']} vertices, {m['faces']} faces, .glb {m['glb_bytes'] / 1024:.0f} KiB")
    idle = result["idle"]
    print(f"machine: {result['machine']['cpu']} x{result['machine']['logical_cpus']}, "
          f"idle={idle['idle']} load={idle['load_average']}")
    if args.json:
        write_json(args.json, result, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
