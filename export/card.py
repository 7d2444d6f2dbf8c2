"""Write a Hugging Face-style model card (YAML metadata + Markdown) from a model's JSON.

    python -m export.card --model models/wbc.json [--robustness reports/wbc_robustness.json] \
        [--adaptation reports/wbc_adapt_bccd.json] [--baseline reports/wbc-plain_robustness.json] \
        [--comparison reports/all_init_comparison.json]

Every number in the card is read from the JSON written by export.tflite /
export.ood (or from the robustness and adaptation reports), so the card never disagrees with
the model it describes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import card_crosslab

DATA = {
    "pbc": {
        "name": "PBC (peripheral blood cells), Acevedo et al. 2020",
        "licence": "CC BY 4.0",
        "citation": 'Acevedo A, Merino A, Alferez S, Molina A, Boldu L, Rodellar J. "A dataset of microscopic peripheral blood '
                    'cell images for development of automatic recognition systems." Data in Brief 30 (2020) 105474. '
                    "doi:10.17632/snkd93bnjr.1",
        "about": "17,092 JPEG images (this copy: 15,381 after a 10 % hold-out kept outside the repository) of single white "
                 "cells, platelets and erythroblasts from healthy individuals, CellaVision DM96, May-Grunwald-Giemsa stain, "
                 "Hospital Clinic de Barcelona; resized from 360x363 to 160x160.",
    },
    "all": {
        "name": "Acute Lymphoblastic Leukemia (ALL) image dataset, Aria et al. 2021",
        "licence": "CC BY 4.0",
        "citation": 'Aria M, Ghaderzadeh M, Bashash D, Abolghasemi H, Asadi F, Hosseini A. "Acute Lymphoblastic Leukemia (ALL) '
                    'image dataset." Kaggle (2021) doi:10.34740/KAGGLE/DSV/2175623; Ghaderzadeh M et al., Int J Intell Syst '
                    "37 (2022) 5113-5133.",
        "about": "Peripheral blood smear images of patients suspected of ALL, Taleqani Hospital (Tehran): benign "
                 "(hematogones) and three malignant B-lymphoblast stages; 224x224 fields with a few cells among red cells.",
    },
}


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _preprocessing(meta: dict) -> str:
    stain, norm = meta["input"].get("stain_normalization"), meta["input"]["normalization"]
    how = ("Reinhard stain normalization to L*a*b* mean " + ", ".join(f"{v:.1f}" for v in stain["lab_mean"])
           + " / std " + ", ".join(f"{v:.1f}" for v in stain["lab_std"]) + " (the training images' average)"
           if stain else "no stain normalization")
    return (f"Preprocessing (from the JSON, identical in training, app and station): antialiased resize of the whole frame, "
            f"{how}, then x * {norm['scale']:.6f} {'-' if norm['offset'] < 0 else '+'} {abs(norm['offset']):g}.")


def render(meta: dict, robustness: dict | None = None, adaptation: dict | None = None, baseline: dict | None = None,
           comparison: dict | None = None) -> str:
    """The card's Markdown: metadata, results, calibration and parity from ``meta``, then one section per report given.

    ``robustness`` (training.robustness), ``adaptation`` (export.adapt --report)
    and ``comparison`` (export.compare) each add their section when given;
    ``baseline`` (the plain model's robustness report) adds a column to the
    robustness table. The re-run commands list the reports' commands too.
    """
    lines = _front_matter(meta) + _results(meta) + _calibration(meta) + _parity(meta["metrics"]["parity_with_float"])
    if robustness:
        lines += _robustness_section(robustness, baseline)
    if adaptation:
        lines += _adaptation_section(adaptation)
    if comparison:
        lines += _comparison_section(comparison)
    lines += _data_section(meta) + _provenance(meta, robustness=robustness, adaptation=adaptation) + _intended_use(meta)
    return "\n".join(lines)


def _front_matter(meta: dict) -> list[str]:
    """YAML metadata (model-index with the test accuracy and macro-F1), title, what the model is, its preprocessing."""
    ds, name, test = meta["provenance"]["data"]["dataset"], meta["name"], meta["metrics"]["test"]
    return [
        "---",
        "license: cc-by-4.0",
        "library_name: tflite",
        "pipeline_tag: image-classification",
        "tags: [medical-imaging, hematology, blood-cells, microscopy, tflite, int8, mobilenetv2, edge, research-only]",
        f"datasets: [{ds}]",
        "metrics: [accuracy, f1]",
        "model-index:",
        f"- name: hematovision-{name}",
        "  results:",
        "  - task: {type: image-classification}",
        f"    dataset: {{name: \"{DATA[ds]['name']} - test split\", type: {ds}, split: test}}",
        "    metrics:",
        f"    - {{type: accuracy, value: {test['accuracy']:.4f}}}",
        f"    - {{type: f1, name: macro-F1, value: {test['macro_f1']:.4f}}}",
        "---",
        "",
        f"# HematoVision `{name}`: {meta.get('task', '')}",
        "",
        "> **Research use only. Not a diagnostic device.** Every result must be reviewed by a qualified specialist.",
        "",
        f"{meta.get('architecture', '')}, full-integer **{meta['quantization']}** TFLite "
        f"({meta['size_bytes'] / 1024:.0f} KB), input {meta['input']['size'][0]}x{meta['input']['size'][1]} RGB. Two outputs: "
        "logits and the last feature map, so the device computes Grad-CAM (as CAM) in numpy. "
        f"Labels: {', '.join(f'`{x}`' for x in meta['labels'])}.",
        "",
        _preprocessing(meta),
        "",
    ]


def _results(meta: dict) -> list[str]:
    """Accuracy, macro-F1 and ECE on val and test, the per-class table on test, and the confusion matrix image."""
    m = meta["metrics"]
    lines = [
        "## Results (int8 TFLite through the `hematovision` API)",
        "",
        "| split | n | accuracy | macro-F1 | ECE (calibrated) | ECE (raw) |",
        "|---|---|---|---|---|---|",
    ]
    for split in ("val", "test"):
        r = m[split]
        lines.append(f"| {split} | {r['n']} | {_pct(r['accuracy'])} | {r['macro_f1']:.4f} | {r['ece']:.4f} | {r['ece_uncalibrated']:.4f} |")
    lines += [
        "",
        "Temperature and the uncertain threshold were fitted on `val`; `test` was used only for reporting.",
        "",
        "Per class on `test`:",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for label, r in m["test"]["per_class"].items():
        lines.append(f"| {label} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |")
    return lines + ["", f"![confusion matrix, test]({meta['name']}_confusion_test.png)", ""]


def _calibration(meta: dict) -> list[str]:
    """Temperature, the uncertain rule and what it flags on test; the out-of-distribution score when fitted."""
    cal, unc = meta["calibration"], meta["metrics"]["test"]["uncertain"]
    lines = [
        "## Calibration and uncertainty",
        "",
        f"- Temperature T = {cal['temperature']:.3f} (probabilities = softmax(logits / T)), fitted on `val` by minimising NLL.",
        f"- `uncertain` when the calibrated top-1 confidence < **{cal['uncertain_threshold']:.3f}** ({cal['rule']}).",
        f"- On `test`: {_pct(unc['flagged_uncertain'])} of cells flagged uncertain; accuracy on the rest "
        f"{_pct(unc['accuracy_when_confident'])}, on the flagged ones {_pct(unc['accuracy_when_uncertain'])}.",
    ]
    ood = meta.get("ood")
    if ood:
        mo = ood.get("measured", {})
        cells = mo.get("cells_flagged_out_of_distribution", {})
        lines.append(
            f"- Out-of-distribution score: {ood['method']}; threshold {ood['threshold']:.3f} ({ood['threshold_rule']}). "
            f"Real cells flagged: val {_pct(cells.get('val'))}, test "
            f"{_pct(cells.get('test'))}; generated non-blood images rejected: "
            f"{_pct(mo.get('nonblood_flagged_out_of_distribution'))} ({mo.get('nonblood_set', '')}). "
            "An out-of-distribution image is also reported as uncertain.")
    return lines + [""]


def _parity(par: dict) -> list[str]:
    """Float Keras against the exported model on test: accuracy drop, agreement, probabilities, CAM correlation."""
    return [
        "## Quantization parity (test split)",
        "",
        f"float Keras accuracy {_pct(par['float_accuracy'])}, int8 {_pct(par['exported_accuracy'])} "
        f"(drop {par['accuracy_drop_points']:.2f} points; ships only if <= 0.5); argmax agreement {_pct(par['argmax_agreement'])}; "
        f"max probability difference {par['max_probability_difference']:.3f}; CAM Pearson r mean {par['cam_pearson_mean']:.3f} "
        f"(min {par['cam_pearson_min']:.3f}).",
        "",
    ]


def _robustness_section(r: dict, baseline: dict | None) -> list[str]:
    """The cross-lab proxy table (a plain-model column when ``baseline`` is given), then BCCD and non-blood lines."""
    lines = [
        "## Cross-lab proxy evaluation",
        "",
        f"Command: `{r['command']}` (see `training/robustness.py`, `training/simulated_lab.py`).",
        "",
        "| condition | accuracy | flagged uncertain | accuracy when not flagged |" + (" plain model accuracy |" if baseline else ""),
        "|---|---|---|---|" + ("---|" if baseline else ""),
    ]
    for title, x, b in _robustness_rows(r, baseline or {}):
        lines.append(f"| {title} | {_pct(x.get('accuracy'))} | {_pct(x['flagged_uncertain'])} | {_pct(x.get('accuracy_when_confident'))} |"
                     + (f" {_pct((b or {}).get('accuracy'))} |" if baseline else ""))
    if baseline and "clean" in baseline and "clean" in r:
        diff = 100 * (r["clean"]["accuracy"] - baseline["clean"]["accuracy"])
        lines += ["", f"Plain model for comparison: `{baseline['command']}` (trained without the lab augmentation). "
                      f"PBC test accuracy {diff:+.2f} points against it (the cross-lab work may cost at most 0.3)."]
    return lines + _robustness_extras(r) + [""]


def _robustness_rows(r: dict, base: dict) -> list[tuple[str, dict, dict | None]]:
    """(title, this model's scores, the plain model's or None) per condition, then per simulated-lab profile."""
    rows = [(key, r[key], base.get(key)) for key in ("clean", "upsampled_360x363", "upsampled_1000", "simulated_lab") if key in r]
    rows += [(f"simulated lab: {prof}", x, base.get("simulated_lab_per_profile", {}).get(prof))
             for prof, x in r.get("simulated_lab_per_profile", {}).items()]
    return rows


def _robustness_extras(r: dict) -> list[str]:
    """The unlabelled BCCD crops and the generated non-blood images of a robustness report, when it has them."""
    lines = []
    if "bccd_wbc_crops" in r:
        b = r["bccd_wbc_crops"]
        lines += ["", f"BCCD WBC crops (another lab, no subtype labels; n={b['n']}): flagged uncertain {_pct(b['flagged_uncertain'])}, "
                      f"out-of-distribution {_pct(b['flagged_out_of_distribution'])}; predicted distribution "
                      + ", ".join(f"{k} {100 * v:.0f} %" for k, v in b["predicted_distribution"].items()) + "."]
    if "nonblood" in r:
        lines += ["", f"Generated non-blood images (n={r['nonblood']['n']}): rejected as out-of-distribution "
                      f"{_pct(r['nonblood']['rejected_out_of_distribution'])}, flagged uncertain {_pct(r['nonblood']['flagged_uncertain'])}."]
    return lines


def _adaptation_section(a: dict) -> list[str]:
    """Unlabelled adaptation: the images used and the uncertain share before and after, with a caution either way."""
    ba = a["target_flagged_uncertain"]
    return [
        "## Adaptation to a new microscope without labels",
        "",
        f"Command: `{a['command']}` ({a['method']}; {a['n_target_images']} target images, "
        f"{a['n_source_images']} source images, {a['bn_layers']} batch-norm layers).",
        "",
        f"Target images flagged uncertain: {_pct(ba['before'])} before, {_pct(ba['after'])} after adaptation. "
        + ("Adaptation did not bring these images into the model's domain; validate on labelled cells of your own before use."
           if ba["after"] >= ba["before"] else "Fewer flags are not proof of correct answers: validate on labelled cells of your own."),
        "",
        *_int8_agreement_lines(a.get("int8_float_argmax_agreement_on_target")),
    ]


def _int8_agreement_lines(agreement: float | None) -> list[str]:
    """Whether the adapted model's int8 export kept its float model's answers (export.adapt withdraws it below 90 %)."""
    if agreement is None:
        return []
    from .adapt import MIN_INT8_AGREEMENT

    verdict = ("so export.adapt withdrew it: it is not a usable model" if agreement < MIN_INT8_AGREEMENT
               else "enough to keep it")
    return [f"Its int8 export gave the aligned float model's answer on {_pct(agreement)} of the target images "
            f"(required: {_pct(MIN_INT8_AGREEMENT)}), {verdict}.", ""]


def _comparison_section(comparison: dict) -> list[str]:
    """The candidates this model was chosen from (val decides), the shipped one marked, and their training commands."""
    lines = [
        "## Candidates compared (val decides)",
        "",
        f"Rule: {comparison['rule']}. Command: `{comparison['command']}`.",
        "",
        "| candidate | start | input | val accuracy | val NLL | test accuracy | test macro-F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for cname, c in comparison["candidates"].items():
        start = "ImageNet" if "imagenet" in str(c.get("init")) else f"`{c.get('init')}`"
        shipped = " (**shipped**)" if cname == comparison["chosen"] else ""
        lines.append(f"| {cname}{shipped} | {start} | {c['input_size']} px | {_pct(c['val_accuracy'])} | {c['val_nll']:.4f} | "
                     f"{_pct(c['test_accuracy'])} | {c['test_macro_f1']:.4f} |")
    if comparison.get("note"):
        lines += ["", comparison["note"]]
    return lines + ["", "Training commands:", "", "```bash", *(c["train_command"] for c in comparison["candidates"].values()), "```", ""]


def _data_section(meta: dict) -> list[str]:
    """The dataset (from :data:`DATA`), its licence, the fixed split and the training counts per class, the citation."""
    data, counts = DATA[meta["provenance"]["data"]["dataset"]], meta["provenance"]["data"]
    return [
        "## Data",
        "",
        f"{data['name']} - {data['about']} Licence: {data['licence']}.",
        "",
        f"Split (fixed by `splits.csv`, a hash of the file name): train {sum(counts['counts_train'].values())}, "
        f"val {counts['n_val']}, test {counts['n_test']}. Training counts per class: "
        + ", ".join(f"{k} {v}" for k, v in counts["counts_train"].items()) + " (class-weighted loss).",
        "",
        f"Citation: {data['citation']}",
        "",
        *_other_labs_lines(counts.get("other_labs_labelled") or []),
    ]


def _other_labs_lines(extras: list[dict]) -> list[str]:
    """Other labs' labelled cells added to the training split (``--extra-labelled``): none of them is a zero-shot set."""
    if not extras:
        return []
    lines = ["Other labs' labelled cells added to training (included in the counts above; these labs are **not** "
             "zero-shot test sets for this model):", ""]
    for e in extras:
        per_class = ", ".join(f"{k} {v}" for k, v in e["counts"].items())
        lines.append(f"- `{e['folder']}`: {e['cells']} cells ({per_class}), each repeated {e['copies']} times per epoch")
    return lines + [""]


def _provenance(meta: dict, *, robustness: dict | None = None, adaptation: dict | None = None) -> list[str]:
    """The commands that made the model and its reports (to re-run), then initialisation, timing, versions, commit."""
    prov, ood = meta["provenance"], meta.get("ood")
    lines = ["## How it was made (re-run these)", "", "```bash", prov["train_command"], prov["export_command"]]
    if ood:
        lines.append(ood.get("command", ""))
    if robustness:
        lines.append(robustness["command"])
    if adaptation:
        lines.append(adaptation["command"])
    train_s = prov.get("train_seconds")
    return lines + [
        "```",
        "",
        f"Initialisation: `{prov.get('init')}`{_init_detail(prov)}. Training time: {train_s / 60:.1f} min on "
        f"{prov.get('machine')} (no GPU). " if train_s else "",
        f"Batch-norm check (evaluate() on training images vs fit()): {prov.get('bn_check')}. Versions: {prov.get('versions')}. "
        f"Exported {prov.get('exported')} from commit {prov.get('git_commit')}.",
        "",
    ]


def _init_detail(prov: dict) -> str:
    """Where a fine-tuned model's starting weights came from, when the JSON records it (sha256, how to get them)."""
    init = prov.get("init_model")
    return f" ({init['file']}, sha256 {init['sha256'][:12]})" if init else ""


def _intended_use(meta: dict) -> list[str]:
    """What the model is for, and its limits: one lab's data, the framing it expects, its known failure modes."""
    return [
        "## Intended use and limits",
        "",
        f"- {meta.get('intended_use', '')}",
        "- Trained on one analyser in one hospital: other microscopes, cameras and stains shift colours, focus and scale. "
        "Check the cross-lab section, adapt the model to your set-up with a few labelled cells of your own "
        "(`python -m hematovision adapt --model NAME --cells DIR --out DIR`, DIR/<label>/<image>), and validate locally.",
        "- Single-cell images framed like the training data (cell centred, about a third to half of the frame).",
        "- Known failure modes: confusions between neighbouring maturation stages (e.g. ig vs neutrophil/monocyte; "
        "pre-B vs early pre-B), smudged or overlapping cells, and images unlike the training data, which should be flagged "
        "uncertain but are not guaranteed to be.",
        "",
    ]


def _read_json(path: str | None) -> dict | None:
    return json.loads(Path(path).read_text()) if path else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.card", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--robustness", help="JSON report of python -m training.robustness")
    p.add_argument("--adaptation", help="JSON summary of python -m export.adapt --report")
    p.add_argument("--baseline", help="robustness report of the plain model, shown beside this one")
    p.add_argument("--comparison", help="JSON of python -m export.compare (the candidates this model was chosen from)")
    p.add_argument("--crosslab", help="JSON report of python -m training.crosslab")
    p.add_argument("--crosslab-disclosure", default="", help="what was looked at while choosing (printed under the table)")
    p.add_argument("--batch-shift", help="JSON report of python -m training.batch_shift")
    p.add_argument("--fewshot", nargs="*", default=[], help="JSON reports of python -m training.fewshot")
    p.add_argument("--cam-localisation", help="JSON report of python -m training.cam_localisation")
    p.add_argument("--cam-baseline", help="the same report for the model this one replaces")
    p.add_argument("--out", help="card path (default: <model>.md beside the JSON)")
    args = p.parse_args(argv)
    meta = json.loads(Path(args.model).read_text())
    reports = (_read_json(path) for path in (args.robustness, args.adaptation, args.baseline, args.comparison))
    out = Path(args.out) if args.out else Path(args.model).with_suffix(".md")
    text = render(meta, *reports)
    extra = []
    if args.crosslab:
        extra += card_crosslab.crosslab_section(_read_json(args.crosslab), disclosure=args.crosslab_disclosure)
    if args.batch_shift:
        extra += card_crosslab.batch_shift_section(_read_json(args.batch_shift))
    if args.fewshot:
        extra += card_crosslab.fewshot_section([_read_json(f) for f in args.fewshot])
    if args.cam_localisation:
        extra += card_crosslab.cam_section(_read_json(args.cam_localisation), _read_json(args.cam_baseline))
    if extra:
        # After the results and calibration, before the data/provenance part.
        head, sep, tail = text.partition("\n## Data\n")
        text = head + "\n" + "\n".join(extra) + sep + tail
    out.write_text(text)
    print(out)
    return 0


if __name__ == "__main__":
    from hematovision.commands import run_tool

    run_tool(main)
