"""A lab's differential scope (hematovision/scope.py, hematovision/lab_scope.py, ``python -m hematovision scope``)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from hematovision import cam as cam_maps
from hematovision import load_model
from hematovision.__main__ import main
from hematovision.errors import ModelFormatError
from hematovision.lab_model_files import ModelFilesExistError
from hematovision.lab_scope import scope_model
from hematovision.scope import DifferentialScope, ScopeError
from hematovision.spec import ModelSpec
from hematovision.web.classify_tab import verdict_html
from tests.conftest import copy_model
from tests.tiny_model import LABELS, disc_image

FIVE = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")
WBC = ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet")


def quiet(msg):
    pass


@pytest.mark.parametrize("probabilities, label, outside", [
    # first choice counted: the scope changes nothing
    ((0.01, 0.02, 0.02, 0.05, 0.10, 0.05, 0.70, 0.05), "neutrophil", None),
    # first choice an immature granulocyte: the best counted class, and the first choice named
    ((0.01, 0.02, 0.02, 0.55, 0.05, 0.10, 0.20, 0.05), "neutrophil", "ig"),
    ((0.00, 0.00, 0.60, 0.00, 0.30, 0.10, 0.00, 0.00), "lymphocyte", "erythroblast"),
    ((0.10, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.90), "basophil", "platelet"),
])
def test_choose_golden(probabilities, label, outside):
    scope = DifferentialScope.of(FIVE, WBC)
    index, first = scope.choose(np.array(probabilities), WBC)
    assert (WBC[index], first) == (label, outside)


def test_scope_keeps_the_models_order():
    assert DifferentialScope.of(["neutrophil", "basophil"], WBC).classes == ("basophil", "neutrophil")


@pytest.mark.parametrize("classes, message", [
    (["neutrophil", "blast"], "'blast' are not classes of this model"),
    (["neutrophil", "neutrophil"], "names a class twice"),
    (["neutrophil"], "at least two classes"),
    ([], "at least two classes"),
])
def test_bad_scope_is_refused(classes, message):
    with pytest.raises(ScopeError, match=message):
        DifferentialScope.of(classes, WBC)


@pytest.mark.parametrize("entry, message", [
    ({"classes": ["red", "violet"]}, "'violet' are not classes"),
    ({"classes": ["red"]}, "at least two classes"),
    ({"classes": "red green"}, "list of class names"),
    (["red", "green"], "list of class names"),
])
def test_bad_scope_in_json_is_a_model_format_error(tiny, entry, message):
    data = json.loads(tiny.read_text())
    data["scope"] = entry
    with pytest.raises(ModelFormatError, match=message) as err:
        ModelSpec.from_json(data, json_path=tiny)
    assert "python -m hematovision scope" in str(err.value)


@pytest.fixture
def tiny(tiny_models, tmp_path):
    return copy_model(tiny_models["tiny-int8"], tmp_path / "src")


def discs(n=24, seed=5):
    rng = np.random.default_rng(seed)
    return [(LABELS[i % 3], disc_image(LABELS[i % 3], size=64, rng=rng)) for i in range(n)]


def test_scoped_model_names_only_counted_classes_and_flags_the_rest(tiny, tmp_path):
    path = scope_model(tiny, ["red", "green"], tmp_path / "lab", name="tiny-rg", log=quiet)
    source, scoped = load_model(tiny), load_model(path)
    assert scoped.spec.sha256 == source.spec.sha256 and scoped.spec.scope.classes == ("red", "green")
    outside = 0
    for truth, img in discs():
        a, b = source.predict(img), scoped.predict(img)
        assert b.probabilities == a.probabilities  # not renormalised
        assert b.label in ("red", "green")
        if a.label in ("red", "green"):  # first choice counted: the same answer
            assert (b.label, b.confidence, b.uncertain, b.outside_scope) == (a.label, a.confidence, a.uncertain, None)
        else:  # a blue disc: flagged, its first choice named, the best counted class given
            assert b.uncertain and b.outside_scope == a.label == truth == "blue"
            assert b.confidence == max(a.probabilities["red"], a.probabilities["green"])
            outside += 1
        assert b.uncertain >= a.uncertain  # a scope only adds flags
        assert b.to_json()["outside_scope"] == b.outside_scope
    assert outside == 8  # every blue disc


def test_first_choice_outside_scope_is_flagged_even_without_a_threshold(tiny, tmp_path):
    path = scope_model(tiny, ["red", "green"], tmp_path / "lab", name="rg", log=quiet)
    meta = json.loads(path.read_text())
    meta["calibration"]["uncertain_threshold"] = 0.0  # only the scope can flag now
    path.write_text(json.dumps(meta))
    clf = load_model(path)
    red = clf.predict(disc_image("red", size=64, rng=np.random.default_rng(4)))
    blue = clf.predict(disc_image("blue", size=64, rng=np.random.default_rng(4)))
    assert (red.label, red.uncertain, red.outside_scope) == ("red", False, None)
    assert blue.uncertain and blue.outside_scope == "blue"


def test_scoped_cam_explains_the_label_shown(tiny, tmp_path):
    path = scope_model(tiny, ["red", "green"], tmp_path / "lab", log=quiet)
    clf = load_model(path)
    img = disc_image("blue", size=64, rng=np.random.default_rng(1))
    pred = clf.predict(img)
    _, features = clf.forward(clf.network_input(img))
    want = cam_maps.upsample(cam_maps.class_activation_map(features, clf.head_weights, clf.labels.index(pred.label)), 64, 64)
    np.testing.assert_allclose(pred.cam, want, atol=1e-6)


def test_scope_json_records_its_source(tiny, tmp_path):
    path = scope_model(tiny, ["blue", "red"], tmp_path / "lab", log=quiet)
    meta = json.loads(path.read_text())
    source = json.loads(tiny.read_text())
    assert path.name == f"{source['name']}-scoped.json"
    assert meta["scope"]["classes"] == ["red", "blue"] and meta["scope"]["flagged_when_first_choice_is"] == ["green"]
    assert meta["scope"]["source_model"]["sha256"] == source["sha256"] == meta["sha256"]
    assert "metrics" not in meta  # measured without the scope
    assert meta["display_name"].endswith(", lab scope: 2 classes")


def test_cli_scope_then_classify(tiny, tmp_path, capsys):
    out = tmp_path / "lab"
    assert main(["scope", "--model", str(tiny), "--classes", "red", "green", "--out", str(out), "--name", "rg"]) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(out / "rg.json")
    img = tmp_path / "blue.png"
    import cv2

    cv2.imwrite(str(img), cv2.cvtColor(disc_image("blue", size=64, rng=np.random.default_rng(2)), cv2.COLOR_RGB2BGR))
    assert main(["classify", "--model", path, str(img)]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["label"] in ("red", "green") and row["outside_scope"] == "blue" and row["uncertain"] is True


@pytest.mark.parametrize("args, status, message", [
    (["--classes", "red", "violet"], 1, "'violet' are not classes of this model; choose among red, green, blue"),
    (["--classes", "red"], 1, "at least two classes"),
    (["--classes", "red", "red"], 1, "names a class twice"),
    (["--classes", "red", "green", "--name", "../x"], 2, "not a usable model name"),
    (["--classes", "red", "green", "--model", "no-such-model"], 1, "no-such-model"),
])
def test_cli_bad_input(tiny, tmp_path, capsys, args, status, message):
    argv = ["scope", "--model", str(tiny), "--out", str(tmp_path / "lab"), *args]
    if "--model" in args:
        argv = ["scope", "--out", str(tmp_path / "lab"), *args]
    if status == 2:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    else:
        assert main(argv) == status
    assert message in capsys.readouterr().err
    assert not (tmp_path / "lab").exists() or not any((tmp_path / "lab").glob("*.json"))


def test_never_overwrites_another_model_but_replaces_its_own(tiny, tmp_path):
    out = tmp_path / "lab"
    other = copy_model(tiny, out)  # the source model itself sits in OUT under the requested name
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ModelFilesExistError, match="not an earlier lab model with a scope"):
        scope_model(tiny, ["red", "green"], out, name=other.stem, log=quiet)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    first = scope_model(tiny, ["red", "green"], out, name="rg", log=quiet)
    again = scope_model(tiny, ["red", "blue"], out, name="rg", log=quiet)
    assert again == first and load_model(again).spec.scope.classes == ("red", "blue")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_adapting_a_scoped_model_keeps_its_scope(tiny, tmp_path):
    from hematovision.adapt import adapt
    from tests.test_adapt import write_cells

    scoped = scope_model(tiny, ["red", "green"], tmp_path / "lab", name="rg", log=quiet)
    cells = write_cells(tmp_path / "cells", {lb: 6 for lb in LABELS}, shift=False)
    adapted = adapt(scoped, cells, tmp_path / "adapted", name="rg-lab", log=quiet)
    clf = load_model(adapted)
    assert clf.spec.scope.classes == ("red", "green")
    assert clf.predict(disc_image("blue", size=64, rng=np.random.default_rng(3))).outside_scope == "blue"


def test_result_card_names_the_first_choice():
    spec = SimpleNamespace(descriptions={}, scope=DifferentialScope.of(FIVE, WBC), uncertain_threshold=0.6,
                           task="white cells", name="wbc")
    pred = SimpleNamespace(label="neutrophil", confidence=0.2, out_of_distribution=False, uncertain=True,
                           outside_scope="ig", probabilities={"ig": 0.55, "neutrophil": 0.2})
    card = verdict_html(pred, spec)
    assert "Outside this lab&#x27;s differential" in card or "Outside this lab's differential" in card
    assert "<b>ig</b> (55%)" in card and "<b>neutrophil</b> (20%)" in card


def test_uncertain_card_lists_runners_up_other_than_the_label():
    spec = SimpleNamespace(descriptions={}, scope=None, uncertain_threshold=0.6, task="white cells", name="wbc")
    probs = {"ig": 0.40, "neutrophil": 0.35, "monocyte": 0.25}
    pred = SimpleNamespace(label="neutrophil", confidence=0.35, out_of_distribution=False, uncertain=True,
                           outside_scope=None, probabilities=probs, top=lambda k=3: sorted(probs.items(), key=lambda kv: -kv[1])[:k])
    card = verdict_html(pred, spec)
    assert "Runner-up: ig 40%, monocyte 25%." in card


def test_choose_rows_agrees_with_choose():
    scope = DifferentialScope.of(FIVE, WBC)
    scores = np.random.default_rng(0).normal(size=(200, len(WBC))) * 3
    best, outside = scope.choose_rows(scores, WBC)
    for row, b, o in zip(scores, best, outside):
        index, first = scope.choose(row, WBC)
        assert (index, first is not None) == (b, o)
    assert outside.any() and not outside.all()


def test_a_scoped_station_session_counts_only_its_classes(tiny, tmp_path):
    """The station stores the classes a scoped model counts with its session, so its differential (live summary, log,
    report) has no rows for classes the model never names; an unscoped model's session keeps every class."""
    from hematovision.station.log import StationLog
    from tests.test_station import run_station

    scoped = load_model(scope_model(tiny, ["red", "green"], tmp_path / "lab", log=quiet), num_threads=1)
    frames = [image for _, image in discs(9)]
    summary, config = run_station(scoped, frames, tmp_path / "a", mode="cell")
    assert summary.differential.labels == ("red", "green") and summary.differential.total == 9
    with StationLog(config.db_path, create=False) as db:
        session = db.session(summary.session_id)
        assert session.labels == LABELS and session.counted == ("red", "green")
        assert db.differential(session.id).labels == ("red", "green")
    summary, config = run_station(load_model(tiny, num_threads=1), frames, tmp_path / "b", mode="cell")
    assert summary.differential.labels == LABELS
    with StationLog(config.db_path, create=False) as db:
        assert db.session(summary.session_id).counted is None


def test_a_scoped_models_threshold_is_fitted_on_the_cells_it_can_name():
    """adapt's uncertain threshold is the lowest confidence above which out-of-fold answers are >= 99.5 % right. A
    scoped model flags every cell whose first choice it does not count whatever the confidence, so those cells must
    not push the threshold up: here 20 confident first choices of class 2 (not counted, wrong) would flag everything."""
    from hematovision.lab_calibration import refit_calibration

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    right = np.full((100, 3), -2.0)
    right[np.arange(100), y] = 2.0 + rng.uniform(0, 2, 100)  # counted classes, right, confidence spread
    wrong = np.full((20, 3), -2.0)
    wrong[:, 2] = 6.0  # confidently class 2
    oof, labels = np.concatenate([right, wrong]), np.concatenate([y, np.zeros(20, int)])
    t_all, thr_all = refit_calibration(oof, labels)
    t_scoped, thr_scoped = refit_calibration(oof, labels, counted=np.array([True, True, False]))
    assert t_scoped == t_all
    assert thr_all == 1.0  # unscoped: no confidence level is 99.5 % right, everything would be flagged
    # scoped: the counted first choices are all right, so the threshold is the lowest of their confidences
    lowest = (np.exp(right / t_all) / np.exp(right / t_all).sum(axis=1, keepdims=True)).max(axis=1).min()
    assert thr_scoped == pytest.approx(max(lowest, 0.5))
