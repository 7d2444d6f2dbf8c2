"""Compare exported candidate models and choose the one to ship, on `val` only.

    python -m export.compare --out reports/all_init_comparison.json \
        imagenet_160=/tmp/cand/all-imagenet/all.json wbc_backbone_160=/tmp/cand/all-from-wbc/all.json ...

Each candidate is a model JSON written by ``python -m export.tflite`` (its
metrics were measured on the exported int8 model through the public API).
Rule, fixed before any test number is read: the highest val accuracy wins;
ties go to the lower val negative log-likelihood (calibrated), then to the
smaller input. Test metrics are copied for reporting and never consulted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RULE = "highest val accuracy; ties: lower calibrated val NLL, then smaller input size (test is reported, never used to choose)"


def summarize(meta: dict, path: str) -> dict:
    val, test, prov = meta["metrics"]["val"], meta["metrics"]["test"], meta["provenance"]
    return {
        "model_json": path,
        "train_command": prov["train_command"],
        "export_command": prov["export_command"],
        "init": prov.get("init"),
        "input_size": meta["input"]["size"][0],
        "tta": meta.get("test_time_augmentation"),
        "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"], "val_nll": val["nll"],
        "test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
        "test_recall": {k: v["recall"] for k, v in test["per_class"].items()},
        "train_seconds": prov.get("train_seconds"),
        "sha256": meta["sha256"],
    }


def choose(candidates: dict[str, dict]) -> str:
    return min(candidates, key=lambda k: (-candidates[k]["val_accuracy"], candidates[k]["val_nll"], candidates[k]["input_size"]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("candidates", nargs="+", help="NAME=path/to/model.json")
    p.add_argument("--out", required=True, help="comparison JSON to write")
    p.add_argument("--note", help="what the reader must know about how the candidates came about (shown in the card)")
    args = p.parse_args(argv)
    cands = {}
    for item in args.candidates:
        name, sep, path = item.partition("=")
        if not sep or not name:
            p.error(f"candidate {item!r} must be NAME=path/to/model.json")
        cands[name] = summarize(json.loads(Path(path).read_text()), path)
    best = choose(cands)
    report = {"candidates": cands, "rule": RULE, "chosen": best, "note": args.note,
              "command": "python -m export.compare " + " ".join(argv if argv is not None else sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    for name, c in cands.items():
        print(f"{'*' if name == best else ' '} {name:24s} val {100 * c['val_accuracy']:.2f} % (nll {c['val_nll']:.4f})  "
              f"test {100 * c['test_accuracy']:.2f} %")
    return 0


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
