"""The differential as FHIR R4: a Bundle of a DiagnosticReport, one Observation per white-cell class, and the Device.

Codes come from one table, ``hematovision/data/loinc_wbc_differential.csv``
(LOINC, with each code's source): every class of the model must have a row
there, which says whether it is a leukocyte (an Observation with its percentage
of the counted leukocytes), counted per 100 leukocytes (nucleated red cells) or
not part of a leukocyte differential (platelets: named in the conclusion only).

Status: ``final`` only for a verified differential in which every cell of the
selection has been reviewed; otherwise ``preliminary`` (a model's
pre-classification is always preliminary). The Device records the software and
the model (name, sha256); the conclusion carries the research-use statement.
Stdlib only: the tests validate the output with the ``fhir.resources`` library.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Mapping

from .. import __version__
from ..errors import HematoVisionError

LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
TABLE_NAME = "loinc_wbc_differential.csv"
KINDS = ("panel", "leukocyte", "per_100_leukocytes", "not_reported")
RESEARCH_USE = ("Research use only: HematoVision is not a diagnostic device and has not been clinically validated; "
                "every result must be reviewed by a qualified specialist.")


class FhirExportError(HematoVisionError, ValueError):
    """The differential cannot be written as a FHIR report (each message says how to fix it)."""


@dataclass(frozen=True)
class LoincRow:
    key: str
    kind: str
    loinc: str
    display: str
    unit: str
    ucum: str
    source: str


@dataclass(frozen=True)
class DifferentialReport:
    """What the FHIR report states. ``counts``: counted cells per model class (verified labels when ``verified``)."""

    labels: tuple[str, ...]
    counts: Mapping[str, int]
    model_name: str
    model_sha256: str
    verified: bool = False
    cells: int = 0  # cells in the selection (counted, excluded and not yet reviewed)
    cells_verified: int = 0
    excluded: Mapping[str, int] = field(default_factory=dict)
    reviewers: tuple[str, ...] = ()
    effective: str | None = None  # when the cells were imaged (the first session's start)
    sessions: tuple[int, ...] = ()
    shift_warning: str = ""  # hematovision.batch_shift: the cells look like another set-up than the training lab's
    suspect: str = ""  # a scoped model's first choices outside the lab's differential (station.review.suspect_line)
    not_counted: tuple[str, ...] = ()  # model classes outside the lab's differential scope: no Observation, not "0 %"

    @property
    def final(self) -> bool:
        return self.verified and self.cells > 0 and self.cells_verified == self.cells


def loinc_table(path: str | os.PathLike | None = None) -> dict[str, LoincRow]:
    """The code table (``#`` lines are comments), keyed by model label or ``panel``."""
    text = Path(path).read_text(encoding="utf-8") if path else resources.files("hematovision").joinpath("data", TABLE_NAME).read_text(
        encoding="utf-8")
    rows = csv.DictReader(io.StringIO("".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))))
    table = {r["key"]: LoincRow(**{k: (r.get(k) or "").strip() for k in LoincRow.__dataclass_fields__}) for r in rows}
    bad = [k for k, r in table.items() if r.kind not in KINDS or (r.kind != "not_reported" and not r.loinc)]
    if bad or "panel" not in table:
        raise FhirExportError(f"{path or TABLE_NAME}: malformed rows {bad or ['panel missing']}; each needs a kind among "
                              f"{KINDS} and a LOINC code.")
    return table


def _check_labels(report: DifferentialReport, table: Mapping[str, LoincRow]) -> list[str]:
    missing = [lb for lb in report.labels if lb not in table or table[lb].kind == "panel"]
    if missing:
        raise FhirExportError(f"model {report.model_name!r}: class(es) {', '.join(missing)} have no row in "
                              f"hematovision/data/{TABLE_NAME}; the FHIR report is for white-cell differential models "
                              "(e.g. wbc). Use the CSV export for other models.")
    leukocytes = [lb for lb in report.labels if table[lb].kind == "leukocyte"]
    if not sum(report.counts.get(lb, 0) for lb in leukocytes):
        what = "verified leukocytes: review cells first (`python -m hematovision review`)" if report.verified else "leukocytes"
        raise FhirExportError(f"no {what}; a differential needs at least one counted leukocyte.")
    return leukocytes


def _coding(row: LoincRow) -> dict:
    return {"coding": [{"system": LOINC_SYSTEM, "code": row.loinc, "display": row.display}]}


def _observation(label: str, row: LoincRow, count: int, total: int, *, status: str, common: dict) -> dict:
    value = round(100.0 * count / total, 1)
    per = "leukocytes counted" if row.kind == "leukocyte" else "leukocytes counted (per 100 leukocytes, not part of the 100 %)"
    return {
        "resourceType": "Observation", "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory",
                                  "display": "Laboratory"}]}],
        "code": {**_coding(row), "text": f"{label} (HematoVision class)"},
        **common,
        "valueQuantity": {"value": value, "unit": row.unit, "system": UCUM_SYSTEM, "code": row.ucum},
        "note": [{"text": f"{count} {label} cell(s) among {total} {per}."}],
    }


def _device(report: DifferentialReport) -> dict:
    return {
        "resourceType": "Device",
        "deviceName": [{"name": "HematoVision", "type": "user-friendly-name"}, {"name": report.model_name, "type": "model-name"}],
        "version": [{"type": {"text": "software"}, "value": f"hematovision {__version__}"},
                    {"type": {"text": "model sha256"}, "value": report.model_sha256}],
        "note": [{"text": f"Classifier model {report.model_name}, sha256 {report.model_sha256}. {RESEARCH_USE}"}],
    }


def conclusion(report: DifferentialReport, table: Mapping[str, LoincRow], leukocytes: int) -> str:
    """The report's text: what was counted, by whom, what was left out, why the status, and the research-use statement."""
    if report.verified:
        who = f" (reviewed by {', '.join(report.reviewers)})" if report.reviewers else ""
        parts = [f"Verified differential of {leukocytes} leukocytes{who}."]
    else:
        parts = [f"Pre-classification of {leukocytes} leukocytes by model {report.model_name}, not verified by a technologist."]
    other = {lb: n for lb, n in report.counts.items() if n and table.get(lb) and table[lb].kind == "not_reported"}
    if other:
        parts.append("Also seen, not part of the differential: " + ", ".join(f"{lb} {n}" for lb, n in other.items()) + ".")
    if report.not_counted:
        parts.append("Not assessed (outside this lab's differential, so not reported as zero): "
                     + ", ".join(report.not_counted) + ".")
    if report.excluded:
        parts.append("Not counted: " + ", ".join(f"{lb} {n}" for lb, n in sorted(report.excluded.items())) + ".")
    if not report.final:
        left = report.cells - report.cells_verified
        parts.append(f"Preliminary: {left} of {report.cells} cells not verified yet." if report.verified
                     else "Preliminary until a technologist verifies every cell (report --verified).")
    if report.shift_warning:
        parts.append(report.shift_warning)
    if report.suspect:
        parts.append(report.suspect)
    parts.append(RESEARCH_USE)
    return " ".join(parts)


def build_bundle(report: DifferentialReport, *, issued: str, table: Mapping[str, LoincRow] | None = None) -> dict:
    """The Bundle (type ``collection``) as a JSON-ready dict; ``issued``: an instant with a time zone."""
    table = table or loinc_table()
    leukocytes = _check_labels(report, table)
    total = sum(report.counts.get(lb, 0) for lb in leukocytes)
    status = "final" if report.final else "preliminary"
    device_url = f"urn:uuid:{uuid.uuid4()}"
    common = {**({"effectiveDateTime": report.effective} if report.effective else {}), "issued": issued,
              "method": {"text": "digital morphology: stain segmentation and a convolutional classifier (HematoVision)"
                                 + (", verified by a technologist" if report.verified else "")},
              "device": {"reference": device_url}}
    observations = [(f"urn:uuid:{uuid.uuid4()}", _observation(lb, table[lb], report.counts.get(lb, 0), total, status=status,
                                                                common=common))
                    for lb in report.labels if table[lb].kind in ("leukocyte", "per_100_leukocytes")]
    diagnostic = {
        "resourceType": "DiagnosticReport", "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "HM", "display": "Hematology"}]}],
        "code": {**_coding(table["panel"]), "text": "White-cell differential (HematoVision digital morphology)"},
        **{k: v for k, v in common.items() if k in ("effectiveDateTime", "issued")},
        **({"resultsInterpreter": [{"display": name} for name in report.reviewers]} if report.verified and report.reviewers else {}),
        "result": [{"reference": url, "display": obs["code"]["text"]} for url, obs in observations],
        "conclusion": conclusion(report, table, total),
    }
    entries = [(f"urn:uuid:{uuid.uuid4()}", diagnostic), *observations, (device_url, _device(report))]
    for url, resource in entries:
        resource["id"] = url.removeprefix("urn:uuid:")
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "collection", "timestamp": issued,
            "entry": [{"fullUrl": url, "resource": resource} for url, resource in entries]}


def write_bundle(bundle: dict, path: str | os.PathLike) -> Path:
    """Write the Bundle as JSON through a temporary file (:func:`~hematovision.station.report.replacing`)."""
    from .report import replacing

    text = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
    with replacing(path) as fh:
        fh.write(text)
    return Path(path)
