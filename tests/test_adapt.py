"""Few-shot lab adaptation (hematovision/adapt.py and ``python -m hematovision adapt``)."""

import json
import warnings

import cv2
import numpy as np
import pytest

from hematovision import load_model
from hematovision.__main__ import main
from hematovision.adapt import (
    CellsNotFoundError,
    NoCellsError,
    NoFeatureOutputError,
    TooFewCellsError,
    UnknownLabelError,
    UnreadableImageWarning,
    adapt,
    extend_ood,
    stratified_folds,
)
from hematovision.errors import HematoVisionError, ModelFormatError
from hematovision.ood import OODModel, pooled
from hematovision.preprocessing import prepare
from tests.conftest import copy_model
from tests.tiny_model import LABELS, disc_image


def shifted(img: np.ndarray) -> np.ndarray:
    """The 'other lab': a strong colour shift (channel roll) that makes red look blue, green red, blue green."""
    return np.ascontiguousarray(img[..., [1, 2, 0]])


def write_cells(root, counts: dict, *, shift: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    for label, n in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = disc_image(label, size=64, rng=rng)
            cv2.imwrite(str(root / label / f"{i:03d}.png"), cv2.cvtColor(shifted(img) if shift else img, cv2.COLOR_RGB2BGR))
    return root


def accuracy(clf, images, labels) -> float:
    return float(np.mean([clf.predict(im, cam=False).label == lb for im, lb in zip(images, labels)]))


@pytest.fixture
def tiny(tiny_models, tmp_path):
    return copy_model(tiny_models["tiny-float32"], tmp_path / "src")


def quiet(msg):
    pass


def test_adapt_fixes_colour_shifted_lab(tiny, tmp_path):
    cells = write_cells(tmp_path / "cells", {lb: 12 for lb in LABELS}, shift=True)
    out = tmp_path / "out"
    path = adapt(tiny, cells, out, name="tiny-lab", log=quiet)
    meta = json.loads(path.read_text())
    cv = meta["adaptation"]["cross_validation"]
    print("cross-validated accuracy before", cv["before"]["accuracy"], "after", cv["after"]["accuracy"])
    assert cv["before"]["accuracy"] < 0.5 and cv["after"]["accuracy"] >= 0.9
    assert meta["head"]["source"] == "head_file" and meta["sha256"] == load_model(tiny).spec.sha256
    assert meta["adaptation"]["cells"]["count_per_class"] == {lb: 12 for lb in LABELS}
    assert len(meta["adaptation"]["cells"]["image_sha256"]) == 36
    assert meta["calibration"]["adapted"] is True  # 36 cells >= 30: refitted
    # Fresh cells from the shifted lab, never seen by adapt: accuracy rises.
    rng = np.random.default_rng(123)
    labels = [LABELS[i % 3] for i in range(30)]
    test = [shifted(disc_image(lb, size=64, rng=rng)) for lb in labels]
    src, new = accuracy(load_model(tiny), test, labels), accuracy(load_model(path), test, labels)
    print("held-out shifted accuracy: source", src, "adapted", new)
    assert src < 0.5 and new >= 0.9
    # CAM uses the same (adapted) head as the logits.
    pred = load_model(path).predict(test[0])
    assert pred.cam is not None and pred.cam.shape == test[0].shape[:2]


def test_unlabelled_classes_keep_source_behaviour(tiny, tmp_path, disc):
    cells = write_cells(tmp_path / "cells", {"red": 4, "green": 4}, shift=False)
    path = adapt(tiny, cells, tmp_path / "out", log=quiet)
    meta = json.loads(path.read_text())
    assert path.name == "tiny-float32-lab.json"
    assert meta["adaptation"]["cells"]["unlabelled_classes_keep_source_behaviour"] == ["blue"]
    assert meta["calibration"]["adapted"] is False and meta["calibration"]["uncertain_threshold"] == 0.6  # too few: kept
    clf = load_model(path)
    assert all(clf.predict(disc("blue", seed=s), cam=False).label == "blue" for s in range(10))


def test_adapted_model_classifies_from_cli(tiny, tmp_path, capsys):
    cells = write_cells(tmp_path / "cells", {lb: 3 for lb in LABELS}, shift=True)
    out = tmp_path / "out"
    assert main(["adapt", "--model", str(tiny), "--cells", str(cells), "--out", str(out), "--name", "lab1"]) == 0
    capsys.readouterr()
    assert main(["classify", "--model", str(out / "lab1.json"), str(cells / "red")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and all("label" in r for r in rows)


def test_unreadable_images_are_listed_and_skipped(tiny, tmp_path):
    cells = write_cells(tmp_path / "cells", {"red": 3, "blue": 2}, shift=False)
    (cells / "red" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UnreadableImageWarning, match="broken.png"):
        path = adapt(tiny, cells, tmp_path / "out", log=quiet)
    assert json.loads(path.read_text())["adaptation"]["cells"]["count_per_class"] == {"blue": 2, "red": 3}


def _bad(tiny, cells, out, exc, match):
    with pytest.raises(exc, match=match) as info:
        adapt(tiny, cells, out, log=quiet)
    assert isinstance(info.value, HematoVisionError) and isinstance(info.value, (ValueError, FileNotFoundError))
    assert not out.exists()
    return info.value


def test_unknown_label_folder(tiny, tmp_path):
    cells = write_cells(tmp_path / "cells", {"red": 3}, shift=False)
    (cells / "purple").mkdir()
    _bad(tiny, cells, tmp_path / "out", UnknownLabelError, "purple.*rename")


def test_too_few_cells_in_a_class(tiny, tmp_path):
    cells = write_cells(tmp_path / "cells", {"red": 3, "green": 1}, shift=False)
    _bad(tiny, cells, tmp_path / "out", TooFewCellsError, "green: 1")


def test_cells_of_one_class_only(tiny, tmp_path):
    cells = write_cells(tmp_path / "cells", {"red": 6}, shift=False)
    _bad(tiny, cells, tmp_path / "out", TooFewCellsError, "one class only.*at least 2 classes")


def test_too_few_after_skipping_unreadable(tiny, tmp_path):
    cells = write_cells(tmp_path / "cells", {"red": 3, "green": 1}, shift=False)
    (cells / "green" / "bad.jpg").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        _bad(tiny, cells, tmp_path / "out", TooFewCellsError, "green: 1")


def test_empty_or_missing_dir(tiny, tmp_path):
    (tmp_path / "empty" / "red").mkdir(parents=True)
    _bad(tiny, tmp_path / "empty", tmp_path / "out", NoCellsError, "no cell images")
    _bad(tiny, tmp_path / "nope", tmp_path / "out", CellsNotFoundError, "no such folder")


def test_model_without_feature_output(tiny, tmp_path):
    meta = json.loads(tiny.read_text())
    meta["outputs"].pop("features")
    meta.pop("cam")
    tiny.write_text(json.dumps(meta))
    cells = write_cells(tmp_path / "cells", {"red": 3}, shift=False)
    err = _bad(tiny, cells, tmp_path / "out", NoFeatureOutputError, "feature-map output")
    assert isinstance(err, ModelFormatError)


def test_head_source_needs_a_head(tiny):
    meta = json.loads(tiny.read_text())
    meta["head"] = {"source": "somewhere"}
    tiny.write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="head.source"):
        load_model(tiny)


def test_extend_ood_explains_lab_features():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(200, 32)) @ np.diag([3.0] * 8 + [0.01] * 24)
    ood = OODModel.fit(src, k=8).with_threshold(0.5)
    lab = rng.normal(size=(10, 8, 32)) * 0.1
    lab[..., 20] += 5.0  # the lab's cells live along a direction the source never used
    new, n = extend_ood(ood, lab)
    assert n >= 1 and new.threshold == 0.5
    assert ood.score(lab.reshape(-1, 32)).mean() > 0.9 > 0.2 > new.score(lab.reshape(-1, 32)).mean()
    assert np.allclose(new.components.T @ new.components, np.eye(new.components.shape[1]), atol=1e-4)


def test_int8_model_adapts(tiny_models, tmp_path):
    src = copy_model(tiny_models["tiny-int8"], tmp_path / "src")
    cells = write_cells(tmp_path / "cells", {lb: 6 for lb in LABELS}, shift=True)
    path = adapt(src, cells, tmp_path / "out", log=quiet)
    cv = json.loads(path.read_text())["adaptation"]["cross_validation"]
    print("int8 cross-validated accuracy before", cv["before"]["accuracy"], "after", cv["after"]["accuracy"])
    assert cv["after"]["accuracy"] > cv["before"]["accuracy"] + 0.5
    assert load_model(path).predict(str(cells / "red" / "000.png"), cam=False).label == "red"


@pytest.mark.parametrize("views, columns", [(None, [0]), ("flips2", [4, 6]), ("dihedral8", list(range(8)))])
def test_deploy_features_pool_the_models_own_views(views, columns):
    from hematovision.adapt import deploy_features

    feats = np.random.default_rng(0).normal(size=(3, 8, 5))
    expected = feats[:, columns].mean(axis=1)
    np.testing.assert_allclose(deploy_features(feats, views)[:, :-1], expected)
    assert (deploy_features(feats, views)[:, -1] == 1).all()


def test_l2_is_chosen_by_the_labs_own_cross_validation(tiny, tmp_path):
    """Default: the grid value with the best out-of-fold accuracy, recorded; --l2 VALUE fixes it."""
    from hematovision.adapt import L2_GRID

    cells = write_cells(tmp_path / "cells", {lb: 12 for lb in LABELS}, shift=True)
    chosen = json.loads(adapt(tiny, cells, tmp_path / "out", log=quiet).read_text())["adaptation"]
    grid = chosen["l2_selection"]["grid_oof_accuracy"]
    assert set(grid) == {f"{v:g}" for v in L2_GRID} and grid[f"{chosen['l2']:g}"] == max(grid.values())
    fixed = json.loads(adapt(tiny, cells, tmp_path / "out2", l2=0.01, log=quiet).read_text())["adaptation"]
    assert fixed["l2"] == 0.01 and list(fixed["l2_selection"]["grid_oof_accuracy"]) == ["0.01"]
    assert fixed["l2_selection"]["rule"] == "given (--l2)"


def test_a_confidently_wrong_source_head_needs_a_weak_pull():
    """Where the source head names every lab class wrongly, a strong pull towards it keeps it wrong out of fold;
    the cross-validation picks a weaker one, and its out-of-fold accuracy is the grid's best."""
    from hematovision.adapt import L2_GRID, fit_lab_head

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    feats = np.eye(3)[y][:, None, :].repeat(8, axis=1) * 4.0 + rng.normal(0, 0.3, (30, 8, 3))
    theta0 = np.concatenate([np.roll(np.eye(3), 1, axis=1) * 20.0, np.zeros((1, 3))])  # class c -> c + 1, confidently
    fit = fit_lab_head(feats, y, theta0, None)
    assert fit.oof_accuracy_by_l2[max(L2_GRID)] < 1.0 and fit.l2 < max(L2_GRID)
    assert fit.oof_accuracy_by_l2[fit.l2] == max(fit.oof_accuracy_by_l2.values()) == 1.0
    assert (fit.oof.argmax(axis=1) == y).mean() == 1.0 and fit.folds == 5


def _tiny_with_atypical_threshold(tiny_models, folder):
    """The tiny model with an OOD reference fitted as export.ood fits one, on its own (unshifted) disc images:
    the reference on 150 'train' images, the flag threshold at the 99.9th and the atypical one at the 95th
    percentile of 150 'val' images."""
    model = copy_model(tiny_models["tiny-float32"], folder)
    clf = load_model(model)
    rng = np.random.default_rng(7)
    feats = np.stack([pooled(clf.forward(prepare(disc_image(LABELS[i % 3], size=64, rng=rng), clf.spec.input))[1])
                      for i in range(300)])
    ood = OODModel.fit(feats[:150], k=4)
    val = ood.score(feats[150:])
    ood = ood.with_threshold(float(np.percentile(val, 99.9)))
    ood.save(model.parent / "tiny.ood.npz")
    meta = json.loads(model.read_text())
    meta["ood"] = {"file": "tiny.ood.npz", "threshold": ood.threshold, "atypical_threshold": float(np.percentile(val, 95))}
    model.write_text(json.dumps(meta))
    return model


def _batch_of_fresh_cells(model, *, shift: bool, n: int = 60, seed: int = 11):
    from hematovision.batch_shift import check_batch

    clf, rng = load_model(model), np.random.default_rng(seed)
    preds = [clf.predict(shifted(im) if shift else im, cam=False)
             for im in (disc_image(LABELS[i % 3], size=64, rng=rng) for i in range(n))]
    return check_batch([p.out_of_distribution for p in preds], atypical=[p.atypical for p in preds])


def test_adapt_refits_the_atypical_threshold_so_the_labs_set_up_is_no_longer_called_unfamiliar(tiny_models, tmp_path):
    """The colour-shifted lab is unfamiliar to the source model (a 60-cell batch is called shifted); after adapt on
    36 of its cells, a fresh 60-cell batch from it is not, and a batch from the training lab still is not."""
    model = _tiny_with_atypical_threshold(tiny_models, tmp_path / "src")
    assert _batch_of_fresh_cells(model, shift=True).shifted and not _batch_of_fresh_cells(model, shift=False).shifted
    lines = []
    path = adapt(model, write_cells(tmp_path / "cells", {lb: 12 for lb in LABELS}, shift=True), tmp_path / "out",
                 name="tiny-lab", log=lines.append)
    meta = json.loads(path.read_text())
    before = meta["adaptation"]["set_up_check"]["before"]
    assert before["batch_called_shifted"] and before["atypical_share"] >= 0.3  # 39 % here, against 5 % of its own
    source = json.loads(model.read_text())["ood"]["atypical_threshold"]
    assert meta["ood"]["atypical_threshold"] >= source and "refit_atypical_threshold" in meta["ood"]["atypical_threshold_rule"]
    assert not _batch_of_fresh_cells(path, shift=True).shifted and not _batch_of_fresh_cells(path, shift=False).shifted
    assert any(line.startswith("set-up check on the lab's 36 cells: source model") and "(called unfamiliar)" in line
               for line in lines)
    assert any(line.startswith("atypical threshold refitted to the lab's cells") for line in lines)


def test_adapt_keeps_the_atypical_threshold_below_30_cells(tiny_models, tmp_path):
    model = _tiny_with_atypical_threshold(tiny_models, tmp_path / "src")
    lines = []
    path = adapt(model, write_cells(tmp_path / "cells", {lb: 6 for lb in LABELS}, shift=True), tmp_path / "out",
                 name="tiny-lab", log=lines.append)
    ood = json.loads(path.read_text())["ood"]
    assert ood["atypical_threshold"] == json.loads(model.read_text())["ood"]["atypical_threshold"]
    assert any("atypical threshold kept (fewer than 30 cells)" in line for line in lines)


def test_refit_atypical_threshold_never_goes_below_the_source():
    from hematovision.lab_calibration import refit_atypical_threshold

    lab = np.linspace(0.0, 1.0, 101)
    assert refit_atypical_threshold(0.5, lab) == pytest.approx(0.95)
    assert refit_atypical_threshold(0.99, lab) == 0.99


def test_adapt_without_an_ood_reference_records_no_set_up_check(tiny, tmp_path):
    cells = write_cells(tmp_path / "cells", {lb: 6 for lb in LABELS}, shift=True)
    path = adapt(tiny, cells, tmp_path / "out", name="tiny-lab", log=quiet)
    assert json.loads(path.read_text())["adaptation"]["set_up_check"] is None


def test_stratified_folds_keep_every_class_in_every_fold():
    y = np.array([0] * 7 + [1] * 5 + [2] * 9)
    fold, k = stratified_folds(y, seed=3)
    assert k == 5 and set(fold) == set(range(5))
    for c in (0, 1, 2):
        assert set(fold[y == c]) == set(range(5))


# --------------------------------------------------------------------------- where the adapted files go


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_adapt_never_writes_over_another_model(tiny, tmp_path, capsys):
    """OUT already holds a shipped model named like --name: refused, every byte of it kept."""
    from hematovision.lab_model_files import ModelFilesExistError

    cells = write_cells(tmp_path / "cells", {lb: 3 for lb in LABELS}, shift=True)
    models = tmp_path / "models"
    copy_model(tiny, models)
    before = _files(models)
    with pytest.raises(ModelFilesExistError, match="not an earlier lab adaptation"):
        adapt(tiny, cells, models, name=tiny.stem, log=quiet)
    assert main(["adapt", "--model", str(tiny), "--cells", str(cells), "--out", str(models), "--name", tiny.stem]) == 1
    assert "nothing was written" in capsys.readouterr().err
    (models / "orphan.head.npz").write_bytes(b"another model's head, its JSON gone")
    with pytest.raises(ModelFilesExistError, match="orphan.head.npz"):
        adapt(tiny, cells, models, name="orphan", log=quiet)
    assert _files(models) == {**before, "orphan.head.npz": b"another model's head, its JSON gone"}


def test_adapt_replaces_its_own_earlier_adaptation(tiny, tmp_path):
    cells = write_cells(tmp_path / "cells", {lb: 3 for lb in LABELS}, shift=True)
    out, said = tmp_path / "out", []
    first = json.loads(adapt(tiny, cells, out, name="lab", log=quiet).read_text())
    write_cells(cells, {"red": 5}, shift=True, seed=1)  # more verified cells: the lab re-adapts
    second = json.loads(adapt(tiny, cells, out, name="lab", log=said.append).read_text())
    assert first["adaptation"]["cells"]["count_per_class"]["red"] == 3
    assert second["adaptation"]["cells"]["count_per_class"]["red"] == 5
    assert any("replaced the earlier adaptation 'lab'" in line for line in said)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_a_failed_adaptation_leaves_the_output_folder_as_it_was(tiny, tmp_path, monkeypatch):
    import hematovision.adapt as adapt_module

    cells = write_cells(tmp_path / "cells", {lb: 3 for lb in LABELS}, shift=True)
    out = tmp_path / "out"
    adapt(tiny, cells, out, name="lab", log=quiet)
    before = _files(out)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(adapt_module.label_check, "label_disagreements", broken)  # after the head and .tflite are written
    with pytest.raises(OSError, match="disk full"):
        adapt(tiny, cells, out, name="lab", log=quiet)
    with pytest.raises(OSError, match="disk full"):
        adapt(tiny, cells, out, name="new", log=quiet)
    assert _files(out) == before and sorted(p.name for p in out.iterdir()) == sorted(before)


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "x.json", "", "-lab", "a" * 65, "über"])
def test_a_name_that_is_not_a_plain_model_name_is_refused(tiny, tmp_path, capsys, name):
    from hematovision.lab_model_files import ModelNameError

    cells = write_cells(tmp_path / "cells", {lb: 2 for lb in LABELS}, shift=False)
    if name:  # the API's name=None (or "") means the default <model>-lab
        with pytest.raises(ModelNameError, match="not a usable model name"):
            adapt(tiny, cells, tmp_path / "out", name=name, log=quiet)
    with pytest.raises(SystemExit) as info:
        main(["adapt", "--model", str(tiny), "--cells", str(cells), "--out", str(tmp_path / "out"), f"--name={name}"])
    assert info.value.code == 2 and "not a usable model name" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("l2", [0.0, -1.0, float("nan"), float("inf")])
def test_l2_must_be_positive_and_finite(tiny, tmp_path, capsys, l2):
    cells = write_cells(tmp_path / "cells", {lb: 2 for lb in LABELS}, shift=False)
    with pytest.raises(ValueError, match="l2 must be a positive finite number"):
        adapt(tiny, cells, tmp_path / "out", l2=l2, log=quiet)
    with pytest.raises(SystemExit) as info:
        main(["adapt", "--model", str(tiny), "--cells", str(cells), "--out", str(tmp_path / "out"), f"--l2={l2}"])
    assert info.value.code == 2 and "--l2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_images_beside_the_class_folders_are_named_as_unused(tiny, tmp_path, capsys):
    cells = write_cells(tmp_path / "cells", {lb: 2 for lb in LABELS}, shift=False)
    (cells / "red" / "000.png").rename(cells / "loose.png")
    (cells / "red" / "extra.png").write_bytes((cells / "red" / "001.png").read_bytes())
    with pytest.warns(UserWarning, match="1 image.*loose.png.*DIR/<label>/"):
        adapt(tiny, cells, tmp_path / "out", log=quiet)
    assert main(["adapt", "--model", str(tiny), "--cells", str(cells), "--out", str(tmp_path / "out2")]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "loose.png" in err and "adapt.py:" not in err  # one plain line, no source location
