"""The signed differential as FHIR R4: a Bundle whose DiagnosticReport and LOINC-coded Observations validate with the
fhir.resources library (R4B models, the R4 maintenance release), percentages that match the verified counts, and
`preliminary` until every cell is verified. Ends with the issue's acceptance run: station -> review -> report."""

import csv
import json
import re
import shutil
import subprocess
import sys

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError

from hematovision.__main__ import main
from hematovision.station.fhir import RESEARCH_USE, DifferentialReport, FhirExportError, build_bundle, loinc_table
from hematovision.station.review import add_review
from hematovision.station.log import StationLog, now_iso
from tests.conftest import EXAMPLES, ROOT
from tests.test_review import WBC, make_db

LOINC_CODE = re.compile(r"^\d{1,7}-\d$")


def resources_of(bundle: dict) -> dict[str, list]:
    out: dict[str, list] = {}
    for entry in bundle["entry"]:
        out.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return out


def validated(bundle: dict) -> Bundle:
    parsed = Bundle.model_validate(bundle)
    for entry in bundle["entry"]:  # each resource on its own too, by its own model
        kind = entry["resource"]["resourceType"]
        if kind == "DiagnosticReport":
            DiagnosticReport.model_validate(entry["resource"])
        elif kind == "Observation":
            Observation.model_validate(entry["resource"])
    return parsed


def observations_by_code(bundle: dict) -> dict[str, float]:
    return {o["code"]["coding"][0]["code"]: o["valueQuantity"]["value"] for o in resources_of(bundle)["Observation"]}


def report(**overrides) -> DifferentialReport:
    base = dict(labels=WBC, counts={"neutrophil": 6, "lymphocyte": 3, "monocyte": 1, "erythroblast": 2, "platelet": 4},
                model_name="wbc", model_sha256="c" * 64, verified=True, cells=17, cells_verified=17, excluded={"smudge": 1},
                reviewers=("A. Smith",), effective="2025-03-01T09:00:00.000Z")
    return DifferentialReport(**{**base, **overrides})


def test_the_code_table_is_one_file_with_a_source_for_every_code():
    table = loinc_table()
    assert set(WBC) <= set(table) and table["panel"].kind == "panel"
    for key, row in table.items():
        if row.kind != "not_reported":
            assert LOINC_CODE.match(row.loinc) and row.source == f"https://loinc.org/{row.loinc}", key
    assert [r.key for r in table.values() if r.kind == "leukocyte"] == ["neutrophil", "lymphocyte", "monocyte", "eosinophil",
                                                                          "basophil", "ig"]
    assert len({r.loinc for r in table.values() if r.loinc}) == len([r for r in table.values() if r.loinc])  # no code twice


def test_the_code_table_ships_in_the_package():
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    patterns = re.search(r"^hematovision\s*=\s*\[([^\]]*)\]", section, re.M).group(1)
    package = ROOT / "hematovision"
    shipped = {p for pattern in re.findall(r'"([^"]+)"', patterns) for p in package.glob(pattern)}
    assert package / "data" / "loinc_wbc_differential.csv" in shipped


@pytest.mark.parametrize("overrides, status", [
    ({}, "final"),
    ({"cells_verified": 16}, "preliminary"),
    ({"verified": False}, "preliminary"),
])
def test_bundle_validates_and_carries_status_device_and_research_use(overrides, status):
    bundle = build_bundle(report(**overrides), issued=now_iso())
    parsed = validated(bundle)
    assert parsed.type == "collection"
    found = resources_of(bundle)
    (diag,), (device,) = found["DiagnosticReport"], found["Device"]
    assert diag["status"] == status and {o["status"] for o in found["Observation"]} == {status}
    assert diag["code"]["coding"][0] == {"system": "http://loinc.org", "code": "24318-8", "display": "Manual differential panel - Blood"}
    assert RESEARCH_USE in diag["conclusion"] and "smudge 1" in diag["conclusion"] and "platelet 4" in diag["conclusion"]
    assert {"name": "wbc", "type": "model-name"} in device["deviceName"]
    assert {"type": {"text": "model sha256"}, "value": "c" * 64} in device["version"]
    urls = {e["fullUrl"] for e in bundle["entry"]}
    assert {r["reference"] for r in diag["result"]} <= urls and all(o["device"]["reference"] in urls for o in found["Observation"])
    assert len(found["Observation"]) == 7  # six leukocyte classes and the nucleated red cells; platelets are not leukocytes


def test_percentages_are_of_the_counted_leukocytes():
    values = observations_by_code(build_bundle(report(), issued=now_iso()))
    assert values["26511-6"] == 60.0 and values["26478-8"] == 30.0 and values["26485-3"] == 10.0  # 6, 3, 1 of 10 leukocytes
    assert values["30180-4"] == values["26450-7"] == values["38518-7"] == 0.0
    assert values["19048-8"] == 20.0  # 2 nucleated red cells per 100 leukocytes, outside the 100 %
    assert sum(v for k, v in values.items() if k != "19048-8") == pytest.approx(100.0)


@pytest.mark.parametrize("entry, change", [
    (0, lambda r: r.update(note=[{"text": "R5 only"}])),  # DiagnosticReport.note is R5: not in R4
    (0, lambda r: r.pop("code")),
    (0, lambda r: r.update(issued="yesterday")),
    (1, lambda r: r["valueQuantity"].update(value="sixty")),
])
def test_the_validator_rejects_a_broken_report(entry, change):
    bundle = build_bundle(report(), issued=now_iso())
    validated(bundle)
    change(bundle["entry"][entry]["resource"])
    with pytest.raises(ValidationError):
        validated(bundle)


def test_statuses_are_r4_codes():
    # fhir.resources checks a code's syntax, not its value set: check the statuses against R4's required bindings.
    report_status = {"registered", "partial", "preliminary", "final", "amended", "corrected", "appended", "cancelled",
                     "entered-in-error", "unknown"}
    for overrides in ({}, {"verified": False}):
        found = resources_of(build_bundle(report(**overrides), issued=now_iso()))
        assert found["DiagnosticReport"][0]["status"] in report_status
        assert {o["status"] for o in found["Observation"]} <= report_status - {"partial", "appended"}


@pytest.mark.parametrize("overrides, message", [
    ({"labels": ("red", "green", "blue"), "counts": {"red": 3}}, "no row in hematovision/data/loinc_wbc_differential.csv"),
    ({"counts": {"platelet": 3}}, "review cells first"),
])
def test_reports_that_cannot_be_written_say_why(overrides, message):
    with pytest.raises(FhirExportError, match=message) as info:
        build_bundle(report(**overrides), issued=now_iso())
    assert isinstance(info.value, ValueError)


def test_report_cli_verified_fhir_matches_the_verified_counts(tmp_path, capsys):
    db = tmp_path / "station.sqlite"
    make_db(db, ["neutrophil"] * 4 + ["lymphocyte"] * 3 + ["monocyte"])
    with StationLog(db) as log:
        for cell_id, label in [(1, "neutrophil"), (2, "neutrophil"), (3, "lymphocyte"), (5, "lymphocyte"), (6, "smudge")]:
            add_review(log, cell_id=cell_id, label=label, reviewer="A. Smith")
    out = tmp_path / "report.json"
    assert main(["report", "--db", str(db), "--verified", "--fhir", str(out), "--csv", str(tmp_path / "c.csv")]) == 0
    printed = capsys.readouterr().out
    assert "Verified differential: 4 cells (5 of 8 reviewed)" in printed and "not counted: smudge 1" in printed
    bundle = json.loads(out.read_text())
    validated(bundle)
    assert resources_of(bundle)["DiagnosticReport"][0]["status"] == "preliminary"
    values = observations_by_code(bundle)
    assert (values["26511-6"], values["26478-8"], values["26485-3"]) == (50.0, 50.0, 0.0)  # 2, 2, 0 of 4 verified leukocytes
    rows = list(csv.DictReader((tmp_path / "c.csv").open(encoding="utf-8")))
    assert [r["verified_label"] for r in rows] == ["neutrophil", "neutrophil", "lymphocyte", "", "lymphocyte", "smudge", "", ""]
    with StationLog(db) as log:
        for cell_id in (4, 7, 8):
            add_review(log, cell_id=cell_id, label="artefact" if cell_id == 8 else "lymphocyte", reviewer="B. Jones")
    assert main(["report", "--db", str(db), "--verified", "--fhir", str(out)]) == 0
    bundle = json.loads(out.read_text())
    diag = resources_of(bundle)["DiagnosticReport"][0]
    assert diag["status"] == "final" and {o["status"] for o in resources_of(bundle)["Observation"]} == {"final"}
    assert diag["resultsInterpreter"] == [{"display": "A. Smith"}, {"display": "B. Jones"}]
    assert observations_by_code(bundle)["26478-8"] == pytest.approx(100 * 4 / 6, abs=0.05)


@pytest.mark.parametrize("argv, message", [
    (["--fhir", "{out}"], "no row in hematovision/data/loinc_wbc_differential.csv"),
    (["--verified", "--fhir", "{out}"], "no row in"),
])
def test_report_cli_refuses_fhir_for_a_non_wbc_model(tmp_path, capsys, argv, message):
    db = tmp_path / "station.sqlite"
    make_db(db, ["red", "green"], model_labels=("red", "green", "blue"))
    out = tmp_path / "r.json"
    code = main(["report", "--db", str(db), *[a.format(out=out) for a in argv]])
    err = capsys.readouterr().err
    assert code == 1 and message in err and err.count("\n") == 1 and not out.exists()


def test_acceptance_station_review_three_cells_signed_report(tmp_path):
    """Station run over a folder -> review 3 cells through the CLI -> report --verified --fhir (the issue's acceptance)."""
    folder = tmp_path / "scan"
    folder.mkdir()
    for image in sorted((EXAMPLES / "wbc").glob("*.jpg")):
        shutil.copy(image, folder / image.name)
    db = tmp_path / "station.sqlite"
    hv = [sys.executable, "-m", "hematovision"]

    def run(*argv):
        r = subprocess.run([*hv, *map(str, argv)], capture_output=True, text=True, cwd=ROOT, timeout=180)
        assert r.returncode == 0, r.stderr
        return r.stdout

    run("station", "--source", f"folder:{folder}", "--model", ROOT / "models" / "wbc.json", "--db", db, "--mode", "cell",
        "--no-watch", "--min-sharpness", "0")
    with StationLog(db) as log:
        cells = list(log.cells())
    assert len(cells) == len(list(folder.glob("*.jpg")))
    verified = {cells[0]["id"]: "neutrophil", cells[1]["id"]: "lymphocyte", cells[2]["id"]: "neutrophil"}
    for cell_id, label in verified.items():
        assert "by A. Smith" in run("review", "--db", db, "--set", cell_id, label, "--reviewer", "A. Smith")
    out = tmp_path / "report.json"
    run("report", "--db", db, "--verified", "--fhir", out)
    bundle = json.loads(out.read_text())
    validated(bundle)
    diag = resources_of(bundle)["DiagnosticReport"][0]
    assert diag["status"] == "preliminary" and f"{len(cells) - 3} of {len(cells)} cells not verified" in diag["conclusion"]
    values = observations_by_code(bundle)
    assert values["26511-6"] == pytest.approx(100 * 2 / 3, abs=0.05) and values["26478-8"] == pytest.approx(100 / 3, abs=0.05)
    assert sum(v for k, v in values.items() if k != "19048-8") == pytest.approx(100.0, abs=0.1)
    device = resources_of(bundle)["Device"][0]
    model = json.loads((ROOT / "models" / "wbc.json").read_text())
    assert {"type": {"text": "model sha256"}, "value": model["sha256"]} in device["version"]


@pytest.mark.parametrize("ood, warned", [((), False), (tuple(range(6)), True)])
def test_fhir_conclusion_carries_the_batch_shift_warning(tmp_path, capsys, ood, warned):
    """Cells from an unfamiliar set-up (hematovision/batch_shift.py) say so in the report's conclusion, too."""
    db = tmp_path / "station.sqlite"
    make_db(db, ["neutrophil"] * 8 + ["lymphocyte"] * 4, ood=ood)
    out = tmp_path / "report.json"
    assert main(["report", "--db", str(db), "--fhir", str(out)]) == 0
    bundle = json.loads(out.read_text())
    validated(bundle)
    text = resources_of(bundle)["DiagnosticReport"][0]["conclusion"]
    assert ("looks unlike the training lab's cells: 6 of 12 cells are out of distribution" in text) is warned
    assert text.endswith(RESEARCH_USE)


@pytest.mark.parametrize("firsts, said", [
    ({}, None),  # an unscoped model: nothing to say
    ({0: "ig", 1: "ig", 5: "erythroblast"}, "outside this lab's differential (flagged, counted under the best class it "
                                            "counts until reviewed): erythroblast 1, ig 2."),
])
def test_report_and_fhir_name_a_scoped_models_first_choices_outside_it(tmp_path, capsys, firsts, said):
    """A five-part lab's station (python -m hematovision scope): the cells whose first choice was ig or erythroblast
    are counted in the report and in the FHIR conclusion, like an analyser's suspect flags."""
    db = tmp_path / "station.sqlite"
    probabilities = {i: {c: 0.6, "neutrophil": 0.3} for i, c in firsts.items()}
    make_db(db, ["neutrophil"] * 8 + ["lymphocyte"] * 4, uncertain=tuple(firsts), probabilities=probabilities)
    out = tmp_path / "report.json"
    assert main(["report", "--db", str(db), "--fhir", str(out)]) == 0
    printed = capsys.readouterr().out
    bundle = json.loads(out.read_text())
    validated(bundle)
    text = resources_of(bundle)["DiagnosticReport"][0]["conclusion"]
    if said is None:
        assert "outside this lab's differential" not in text + printed
    else:
        assert said in text and said in printed
    assert text.endswith(RESEARCH_USE)


FIVE_PART = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")


@pytest.mark.parametrize("verified_ig", [False, True])
def test_a_scoped_session_reports_only_the_classes_it_counts(tmp_path, capsys, verified_ig):
    """A five-part lab's model never names ig, erythroblast or platelet, so its report must not state "ig 0 %": those
    classes get no Observation, the conclusion says they were not assessed, and the printed differential has no rows
    for them. A technologist who verifies a cell as ig counts it: then ig is reported."""
    db = tmp_path / "station.sqlite"
    ids = make_db(db, ["neutrophil"] * 8 + ["lymphocyte"] * 4, counted=FIVE_PART)
    with StationLog(db, create=False) as log:
        assert log.session(1).counted == FIVE_PART and log.differential(1).labels == FIVE_PART
        for i, cell in enumerate(ids):
            add_review(log, cell_id=cell, label="ig" if (verified_ig and i == 0) else log.cell(cell)["label"], reviewer="A. Smith")
    out = tmp_path / "report.json"
    assert main(["report", "--db", str(db), "--verified", "--fhir", str(out)]) == 0
    printed = capsys.readouterr().out
    bundle = json.loads(out.read_text())
    validated(bundle)
    codes = observations_by_code(bundle)
    table = loinc_table()
    assert table["erythroblast"].loinc not in codes
    assert (table["ig"].loinc in codes) is verified_ig
    if verified_ig:
        assert codes[table["ig"].loinc] == pytest.approx(100 / 12, abs=0.05)
    text = resources_of(bundle)["DiagnosticReport"][0]["conclusion"]
    not_assessed = "erythroblast, platelet" if verified_ig else "erythroblast, ig, platelet"
    assert f"Not assessed (outside this lab's differential, so not reported as zero): {not_assessed}." in text
    assert "not assessed (outside this lab's differential): erythroblast, ig, platelet" in printed
    rows = [line.split()[0] for line in printed.splitlines() if line.startswith("  ") and line.split()[-1] == "%"]
    assert ("ig" in rows) is verified_ig and "erythroblast" not in rows and "platelet" not in rows


def test_an_unscoped_session_still_reports_every_class(tmp_path):
    db = tmp_path / "station.sqlite"
    make_db(db, ["neutrophil"] * 8 + ["lymphocyte"] * 4)
    out = tmp_path / "report.json"
    assert main(["report", "--db", str(db), "--fhir", str(out)]) == 0
    bundle = json.loads(out.read_text())
    codes = observations_by_code(bundle)
    table = loinc_table()
    assert codes[table["ig"].loinc] == 0.0 and codes[table["erythroblast"].loinc] == 0.0
    assert "Not assessed" not in resources_of(bundle)["DiagnosticReport"][0]["conclusion"]
