"""Model selection (export.compare) and the model card's report sections (export.card), on real shipped metadata."""

import json

import pytest

from export.card import render
from export.compare import choose, main as compare
from tests.conftest import ROOT


def _cand(val, nll, size, test=0.5):
    return {"val_accuracy": val, "val_nll": nll, "input_size": size, "test_accuracy": test}


@pytest.mark.parametrize("cands, expected", [
    ({"a": _cand(0.99, 0.05, 160), "b": _cand(0.995, 0.09, 224)}, "b"),             # val accuracy decides
    ({"a": _cand(0.995, 0.05, 224), "b": _cand(0.995, 0.03, 224)}, "b"),            # tie: lower NLL
    ({"a": _cand(0.995, 0.03, 224), "b": _cand(0.995, 0.03, 160)}, "b"),            # tie again: smaller input
    ({"a": _cand(0.99, 0.05, 160, test=1.0), "b": _cand(0.995, 0.05, 160, test=0.0)}, "b"),  # test never matters
])
def test_choose_uses_val_only(cands, expected):
    assert choose(cands) == expected


@pytest.fixture
def wbc_meta():
    return json.loads((ROOT / "models" / "wbc.json").read_text())


def test_compare_writes_a_report_the_card_renders(wbc_meta, tmp_path):
    a, b = dict(wbc_meta), json.loads(json.dumps(wbc_meta))
    b["metrics"]["val"]["accuracy"] = a["metrics"]["val"]["accuracy"] + 0.001
    b["input"]["size"] = [224, 224]
    for name, meta in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(meta))
    out = tmp_path / "cmp.json"
    assert compare([f"first={tmp_path / 'a.json'}", f"second={tmp_path / 'b.json'}", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["chosen"] == "second" and set(report["candidates"]) == {"first", "second"}
    card = render(wbc_meta, comparison=report)
    assert "## Candidates compared (val decides)" in card and "| second (**shipped**) |" in card and "224 px" in card


def test_compare_rejects_a_malformed_candidate(tmp_path):
    with pytest.raises(SystemExit):
        compare(["no-equals-sign", "--out", str(tmp_path / "x.json")])


def test_card_shows_the_plain_model_and_the_preprocessing(wbc_meta):
    rob = {"command": "python -m training.robustness X", "clean": {"accuracy": 0.988, "flagged_uncertain": 0.04, "accuracy_when_confident": 0.998}}
    plain = {"command": "python -m training.robustness PLAIN", "clean": {"accuracy": 0.969}}
    card = render(wbc_meta, rob, baseline=plain)
    assert "| clean | 98.80 % | 4.00 % | 99.80 % | 96.90 % |" in card
    assert "+1.90 points against it" in card
    assert "no stain normalization" in card or "Reinhard stain normalization" in card


def test_card_points_labs_to_the_adapt_command(wbc_meta):
    card = render(wbc_meta)
    assert "`python -m hematovision adapt --model NAME --cells DIR --out DIR`" in card and "export.adapt" not in card


def test_write_report_makes_the_folder_and_returns_the_text(tmp_path):
    from training.reportio import write_report

    report = {"model": "wbc", "clean": {"accuracy": 0.98}}
    out = tmp_path / "new" / "report.json"
    text = write_report(report, out)
    assert out.read_text() == text == json.dumps(report, indent=2)
    assert write_report(report, None) == text and sorted(p.name for p in tmp_path.rglob("*")) == ["new", "report.json"]
