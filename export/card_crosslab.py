"""Model-card sections for the cross-lab report, the batch-level shift check, few-shot adaptation and CAM localisation.

Each function takes the JSON a repo command wrote (``training.crosslab``, ``training.batch_shift``,
``training.fewshot``, ``training.cam_localisation``) and returns Markdown
lines that quote its numbers and its command, so the card never disagrees
with the report.
"""

from __future__ import annotations


def _ci(x: dict) -> str:
    if x.get("value") is None:
        return "-"
    lo, hi = max(0.0, x["ci95"][0]), min(1.0, x["ci95"][1])
    return f"{100 * x['value']:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"


def _row(name: str, s: dict) -> str:
    return (f"| {name} | {s['n']} | {_ci(s['accuracy'])} | {s['macro_f1_present_classes']:.3f} | {_ci(s['flagged'])} | "
            f"{_ci(s['accuracy_not_flagged'])} | {_ci(s['confidently_wrong'])} |")


def crosslab_section(report: dict, *, disclosure: str = "") -> list[str]:
    lines = ["## Cross-lab accuracy (other labs' cells; their labels never used for training or selection)", "",
             "Accuracy, flagged share and the accuracy of the cells not flagged, with 95 % Wilson intervals "
             "(flagged = uncertain or out-of-distribution; confidently wrong = not flagged and wrong).", "",
             "| cells | n | accuracy | macro-F1 (classes present) | flagged | accuracy not flagged | confidently wrong |",
             "|---|---|---|---|---|---|---|"]
    if "pbc_test" in report:
        lines.append(_row("PBC test (own lab)", report["pbc_test"]))
    for name, r in report["labelled"].items():
        lines.append(_row(name, r["plain"]))
        if "reframed" in r:
            lines.append(_row(f"{name}, reframed to PBC framing", r["reframed"]))
    lines.append("")
    for name, r in report["labelled"].items():
        rec = ", ".join(f"{c} {_ci(v)} (n={v['n']})" for c, v in r["plain"]["per_class_recall"].items())
        lines.append(f"- {name} recall per class: {rec}.")
    b = report.get("blasts_pbc_framing")
    if b:
        lines.append(f"- Unknown cell types: {b['n_crops']} B-lymphoblasts cut from the ALL set's malignant fields at PBC "
                     f"framing (the core's cell detector): flagged {_ci(b['flagged'])}; confidently named as a mature "
                     f"normal cell {_ci(b['confidently_named_mature_normal'])} (the most dangerous error).")
    c = report.get("bccd_wbc_crops")
    if c:
        lines.append(f"- BCCD white-cell crops (another lab, no subtype labels): {c['n']} crops, flagged {_ci(c['flagged'])}.")
    if disclosure:
        lines.append(f"- {disclosure}")
    lines += ["", f"Command: `{report['command']}` (training/crosslab.py).", ""]
    return lines


def batch_shift_section(report: dict) -> list[str]:
    """How often a batch is called "unfamiliar set-up" (hematovision/batch_shift.py), and what that saves."""
    sizes = [b["size"] for b in next(iter(report["sets"].values()))["by_size"]]
    lines = ["## Batch-level set-up check (`hematovision/batch_shift.py`)", "",
             "A batch (CLI run, Batch tab, station session) gets a warning when its cells are out of distribution "
             "(binomial test against 1 %) or atypical (OOD score above the 95th percentile of val, tested against 10 %) "
             "far more often than the training lab's own cells (alpha 0.001 over both counts, Bonferroni; at least 5 "
             "cells): on an unfamiliar microscope even the confident answers are unreliable. Share of random batches "
             "called shifted, in brackets with the out-of-distribution count alone, and, where labels exist, the share "
             "of cells confidently wrong without -> with the check (a cell of a shifted batch counts as flagged).", "",
             "| set | cells | per cell: out of distribution / atypical | " + " | ".join(f"n = {n}" for n in sizes) + " |",
             "|---|---|---|" + "---|" * len(sizes)]
    for name, s in report["sets"].items():
        cells = []
        for b, alone in zip(s["by_size"], s.get("by_size_flag_count_only") or [None] * len(s["by_size"])):
            if "skipped" in b:
                cells.append("-")
                continue
            text = f"{100 * b['shifted_share']:.1f} %"
            if alone is not None:
                text += f" ({100 * alone['shifted_share']:.1f} %)"
            if "confidently_wrong_without_check" in b:
                text += (f", confidently wrong {100 * b['confidently_wrong_without_check']:.1f} -> "
                         f"{100 * b['confidently_wrong_with_check']:.1f} %")
            cells.append(text)
        atypical = "-" if s.get("atypical_share") is None else f"{100 * s['atypical_share']:.1f} %"
        lines.append(f"| {name} | {s['cells']} | {100 * s['ood_share']:.1f} % / {atypical} | " + " | ".join(cells) + " |")
    running = [(name, s["sequential"]) for name, s in report["sets"].items() if s.get("sequential")]
    if running:
        lines += ["", "The station also judges a session while it runs, once per printed differential. Judged after every "
                  "cell of random sessions (the worst case for repeated looks):", ""]
        for name, q in running:
            when = q["first_warning_at_cells"]
            lines.append(f"- {name}, {q['sessions']} sessions of {q['cells']} cells: the warning ever fires in "
                         f"{100 * q['ever_shifted_share']:.2f} %" + (f", first after {when['median']:.0f} cells (median; 90th "
                                                                     f"percentile {when['p90']:.0f})" if when else "") + ".")
    return lines + ["", "Disclosure: the 95th percentile and the factor 2 of the atypical count were chosen after a probe on "
                    "zheng2, so its figures are not a clean test; the false-alarm rate on the training lab's own test cells is.",
                    "", f"Command: `{report['command']}` (training/batch_shift.py).", ""]


def fewshot_section(reports: list[dict]) -> list[str]:
    lines = ["## Few-shot lab adaptation (`python -m hematovision adapt`)", "",
             "k labelled cells per class from the new lab fit a new head on the frozen int8 network (numpy); the rest of "
             "that lab's cells are the test. Mean and standard deviation over seeded random draws; the pooled 95 % "
             "Wilson interval counts every test cell of every draw (draws share cells, so it is narrower than the spread "
             "over draws: read the sd). Flagged / not flagged: the adapted model's own uncertain flag, calibrated and "
             "OOD-extended from the draw's cells exactly as `adapt` writes it.", "",
             "| lab cells | k per class | draws | test cells per draw | source model | adapted (mean +- sd) | adapted, pooled "
             "95 % CI | adapted: flagged | adapted: accuracy not flagged | adapted: confidently wrong |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for rep in reports:
        lines += [_fewshot_row(rep, r) for r in rep["results"]]
    lines += [""] + [f"Command: `{command}`." for command in dict.fromkeys(rep['command'] for rep in reports)] + [""]
    return lines


def _fewshot_row(rep: dict, r: dict) -> str:
    a, src = r["adapted"], r["source"]
    lo, hi = a["wilson95_pooled"]
    flagged = a.get("flagged_uncertain")
    ci = a.get("accuracy_not_flagged_wilson95")
    not_flagged = "-" if a.get("accuracy_not_flagged") is None else (
        f"{_pct(a['accuracy_not_flagged'])}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""))
    return (f"| {_lab(rep['cells'])} | {r['k']} | {rep['draws']} | {r['test_cells_per_draw']} | "
            f"{100 * src['mean']:.1f} % | {100 * a['mean']:.1f} +- {100 * a['std']:.1f} % | [{100 * lo:.1f}, {100 * hi:.1f}] | "
            f"{'-' if flagged is None else _pct(flagged['mean'])} | {not_flagged} | {_pct(a.get('confidently_wrong_share'))} |")


def _lab(cells: str) -> str:
    """``../shared/data/otherlabs/zheng1/images`` -> ``zheng1``."""
    parts = [p for p in cells.replace("\\", "/").split("/") if p]
    return parts[-2] if len(parts) > 1 and parts[-1] == "images" else (parts[-1] if parts else cells)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def cam_section(report: dict, baseline: dict | None = None) -> list[str]:
    def text(r):
        return (f"{100 * r['mean_cam_mass_inside_cell']:.1f} % of the CAM's mass inside the segmented white cell "
                f"(median {100 * r['median']:.1f} %; a uniform map would score {100 * r['uniform_map_chance']:.1f} %; "
                f"n = {r['n']}, {r['skipped_no_cell']} images without a segmented cell skipped"
                + (f", {r['all_zero_maps']} with an all-zero map left out" if r.get("all_zero_maps") else "")
                + (f"; the best a {r['feature_grid'][0]}x{r['feature_grid'][1]} feature map can score: "
                   f"{100 * r['best_possible_at_this_grid']:.1f} %" if r.get("best_possible_at_this_grid") else "") + ")")
    lines = ["## Does the heatmap point at the cell?", "", f"- This model on PBC {report['split']}: {text(report)}."]
    if baseline:
        lines.append(f"- Before (`{baseline['model']}`, {baseline['sha256'][:12]}): {text(baseline)}.")
    lines += ["", f"Command: `{report['command']}` (training/cam_localisation.py).", ""]
    return lines
