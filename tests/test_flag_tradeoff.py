"""The OOD-threshold trade-off report (training/flag_tradeoff.py): arithmetic and one tiny end-to-end run."""

import json

import cv2
import numpy as np
import pytest

from hematovision import load_model
from hematovision.ood import OODModel, pooled
from hematovision.preprocessing import prepare
from tests.conftest import copy_model
from tests.test_adapt import shifted
from tests.tiny_model import LABELS, disc_image
from training.flag_tradeoff import at_threshold, main, table


def test_at_threshold_counts_flags_and_confidently_wrong():
    s = {"confidence": np.array([0.9, 0.9, 0.9, 0.3, 0.9]), "ood": np.array([0.1, 0.1, 0.5, 0.1, 0.1]),
         "predicted": np.array(["a", "b", "a", "a", "a"])}
    truth = np.array(["a", "a", "b", "a", "a"])
    loose, strict = at_threshold(s, truth, 0.5, 0.6), at_threshold(s, truth, 0.5, 0.2)
    # loose: only the low-confidence cell is flagged; the two wrong ones pass, one of them the OOD one
    assert loose["flagged"]["value"] == pytest.approx(0.2) and loose["confidently_wrong"]["value"] == pytest.approx(0.4)
    assert loose["accuracy_not_flagged"]["value"] == pytest.approx(2 / 4)
    # strict: the OOD cell is flagged too, one wrong cell is left
    assert strict["flagged"]["value"] == pytest.approx(0.4) and strict["confidently_wrong"]["value"] == pytest.approx(0.2)
    assert strict["accuracy_not_flagged"]["value"] == pytest.approx(2 / 3)


def with_ood(tiny_src, dest):
    """The tiny model with an OOD reference fitted on its own disc images (what export.ood does for real models)."""
    path = copy_model(tiny_src, dest)
    clf = load_model(path)
    rng = np.random.default_rng(0)
    feats = np.stack([pooled(clf.forward(prepare(disc_image(LABELS[i % 3], size=64, rng=rng), clf.spec.input))[1])
                      for i in range(60)])
    ood = OODModel.fit(feats[:45], k=4)
    ood = ood.with_threshold(float(np.percentile(ood.score(feats[45:]), 99.9)))
    ood.save(path.parent / "tiny.ood.npz")
    meta = json.loads(path.read_text())
    meta["ood"] = {"file": "tiny.ood.npz", "threshold": ood.threshold, "threshold_rule": "99.9 percentile of val scores"}
    path.write_text(json.dumps(meta))
    return path


def write_split_folder(root, *, shift: bool, per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    rows = ["path,label,split"]
    for label in LABELS:
        (root / "images" / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = disc_image(label, size=64, rng=rng)
            cv2.imwrite(str(root / "images" / label / f"{i}.png"), cv2.cvtColor(shifted(img) if shift else img, cv2.COLOR_RGB2BGR))
            rows.append(f"images/{label}/{i}.png,{label},{('val', 'test')[i % 2]}")
    (root / "splits.csv").write_text("\n".join(rows) + "\n")
    return root


def test_stricter_thresholds_flag_more_and_the_shipped_one_is_kept(tiny_models, tmp_path, capsys):
    model = with_ood(tiny_models["tiny-float32"], tmp_path / "model")
    pbc = write_split_folder(tmp_path / "pbc", shift=False, per_class=8, seed=1)
    lab = write_split_folder(tmp_path / "otherlab", shift=True, per_class=4, seed=2)
    out = tmp_path / "tradeoff.json"
    assert main(["--model", str(model), "--pbc", str(pbc), "--labelled", str(lab), "--percentiles", "99", "50",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["thresholds"]) == ["shipped", "p99", "p50"]
    assert report["thresholds"]["shipped"]["ood_threshold"] == pytest.approx(load_model(model).ood.threshold)
    assert report["counts"] == {"pbc_val": 12, "pbc_test": 12, "otherlab": 12}
    flagged = [report["thresholds"][k]["pbc_test"]["flagged"]["value"] for k in ("p99", "p50")]
    assert flagged[0] <= flagged[1]
    assert "| p50 (" in table(report) and "otherlab: flagged" in capsys.readouterr().err


def test_bad_percentile_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--pbc", "x", "--percentiles", "0"])
    assert "--percentiles must lie in (0, 100]" in capsys.readouterr().err
