"""Smoke tests of the benchmark code (bench/) on the tiny test model: every section runs and its figures are sane."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from bench import latency, macs, report, size, station_fields, throughput
from bench.common import Timing, fill_folder, idleness, machine, split_images
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from tests.tiny_model import disc_image
    import numpy as np

    folder = tmp_path_factory.mktemp("bench-images")
    paths = []
    for i, label in enumerate(("red", "green", "blue")):
        path = folder / f"{label}.png"
        Image.fromarray(disc_image(label, size=96, rng=np.random.default_rng(i))).save(path)
        paths.append(path)
    return paths


def test_timing_statistics():
    t = Timing.from_samples("x", "x", [0.001] * 19 + [0.101])
    assert t.n == 20 and t.median_ms == pytest.approx(1.0) and t.min_ms == pytest.approx(1.0)
    assert t.p95_ms == pytest.approx(1.0 + 0.05 * 100, rel=1e-6)  # linear interpolation between the 19th and 20th
    assert t.mean_ms == pytest.approx(6.0)


def test_macs_of_the_tiny_model_by_hand(tiny_models):
    # conv 3x3 s2 3->8 on 32x32: 16*16*8*27; conv 3x3 s2 8->16: 8*8*16*72; dense 16->3.
    expected = 16 * 16 * 8 * 27 + 8 * 8 * 16 * 72 + 16 * 3
    for name in ("tiny-int8", "tiny-float32"):
        json_path = Path(tiny_models[name])
        rep = macs.run(json_path.with_suffix(".tflite"), keras_path=tiny_models["keras"], here_ms=0.05)
        assert rep.tflite_macs == rep.keras_macs == expected
        assert {o.op for o in rep.by_op} == {"CONV_2D", "FULLY_CONNECTED"}
        assert rep.here_macs_per_s == pytest.approx(expected / 50e-6)
        pi4, pi5 = rep.pi
        assert 0 < pi5.low_ms < pi4.low_ms < pi4.high_ms


@pytest.mark.parametrize("alpha, size_, published_millions", [(0.35, 128, 20), (1.0, 224, 300)])
def test_keras_mac_count_matches_the_published_mobilenet_v2_figures(alpha, size_, published_millions):
    """Sandler et al. 2018 / TF-slim: MobileNetV2 1.0-224 300 M MACs, 0.35-128 20 M."""
    keras = pytest.importorskip("keras")
    model = keras.applications.MobileNetV2(input_shape=(size_, size_, 3), alpha=alpha, include_top=True, weights=None)
    assert macs.count_keras(model) / 1e6 == pytest.approx(published_millions, rel=0.02)


def test_latency_rows_and_ratios(tiny_models, images):
    from hematovision import load_model

    clf = load_model(tiny_models["tiny-int8"])
    rep = latency.run(clf, images, keras_path=tiny_models["keras"], runs=5, warmup=1)
    names = {t.name for t in rep.timings} | {t.name for t in rep.gradcam}
    assert names == {"tflite_net", "tflite_net_2t", "tflite_forward", "tflite_predict", "tflite_predict_1t", "tflite_predict_nocam",
                     "keras_predict",
                     "keras_call", "keras_predict_path", "cam_numpy", "tflite_net_cam", "gradcam_tape", "gradcam_tape_prebuilt"}
    assert all(t.n == 5 and 0 < t.min_ms <= t.median_ms <= t.p95_ms for t in (*rep.timings, *rep.gradcam))
    ratios = {r.name: r.value for r in rep.ratios}
    assert ratios["keras_predict/tflite_net"] > 1.0  # model.predict has a fixed cost far above a tiny int8 network
    assert {"keras_predict_path/tflite_predict", "keras_predict_path/tflite_predict_1t"} <= set(ratios)
    assert rep.tflite_threads_default == clf.model.num_threads >= 1
    assert rep.cam_correlation > 0.8 and rep.top1_agreement >= 2 / 3


def test_latency_without_keras(tiny_models, images):
    from hematovision import load_model

    rep = latency.run(load_model(tiny_models["tiny-int8"]), images[:1], runs=3, warmup=0)
    assert {t.name for t in rep.timings} == {"tflite_net", "tflite_net_2t", "tflite_forward", "tflite_predict",
                                             "tflite_predict_1t", "tflite_predict_nocam"}
    assert rep.keras_path is None and rep.notes


def test_cli_throughput_and_peak_rss(tiny_models, images):
    rep = throughput.run(str(tiny_models["tiny-int8"]), images, n=12, source_name="discs")
    assert [r.name for r in rep.runs] == ["one_image", "folder", "folder_cam"]
    for r in rep.runs:
        assert r.exit_code == 0 and r.errors == 0 and r.classified == r.images and not r.timed_out
        assert 30 < r.peak_rss_mib < 8000
        assert "IMAGES_DIR" in r.command or "ONE_IMAGE_DIR" in r.command
    assert rep.images_per_s > 0 and rep.startup_s > 0


def test_cli_runner_counts_errors(tiny_models, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    r = throughput.run_cli(["classify", "--model", tiny_models["tiny-int8"], tmp_path], name="bad", images=1)
    assert r.exit_code == 1 and r.errors == 1 and r.classified == 0


def test_install_sizes_follow_includes():
    edge = size.requirement_names(ROOT / "requirements-edge.txt")
    full = size.requirement_names(ROOT / "requirements.txt")
    assert {n for n, _ in edge} <= {n for n, _ in full} and ("ai-edge-litert", frozenset()) in full
    rep = size.install_size(ROOT / "requirements-edge.txt")
    assert rep.distributions >= 4 and rep.bytes > 10 * 2**20 and "numpy" in {d.name for d in rep.largest}


def test_size_report_lists_tflite_files(tiny_models):
    rep = size.run(Path(tiny_models["tiny-int8"]).parent, [])
    assert {m.name for m in rep.models} >= {"tiny-int8.tflite", "tiny-float32.tflite"} and all(m.bytes > 0 for m in rep.models)


def test_split_images_and_fill_folder(tmp_path, images):
    data = tmp_path / "data"
    (data / "toy" / "images" / "a").mkdir(parents=True)
    (data / "toy" / "images" / "b").mkdir(parents=True)
    rows = ["path,label,split"]
    for label in "ab":
        for i in range(3):
            Image.open(images[0]).save(data / "toy" / "images" / label / f"{i}.png")
            rows.append(f"images/{label}/{i}.png,{label},{'test' if i else 'train'}")
    (data / "toy" / "splits.csv").write_text("\n".join(rows) + "\n")
    got = split_images(data, "toy", 10)
    assert [p.parent.name for p in got] == ["a", "b", "a", "b"]  # round-robin over classes, test split only
    assert split_images(data, "absent", 5) == [] and split_images(None, "toy", 5) == []
    folder = fill_folder(got, 7, tmp_path / "seven")
    assert len(list(folder.iterdir())) == 7


def test_station_summary_line_is_parsed():
    line = "station: 200 fields in 12.50 s = 16.0 fields/s, 230 cells = 18.4 cells/s (200 fields with cells; skipped none)"
    m = station_fields.SUMMARY.search(line)
    assert m and float(m["fps"]) == 16.0 and int(m["cells"]) == 230


def test_machine_and_idleness_are_recorded():
    m = machine()
    assert m.logical_cpus >= 1 and m.cpu and "UTC" in m.date_utc and "numpy" in m.versions
    idle = idleness(0.2)
    assert isinstance(idle.idle, bool) and len(idle.load_average) == 3


def test_report_renders_every_section(tiny_models, images, tmp_path):
    from hematovision import load_model

    clf = load_model(tiny_models["tiny-int8"])
    lat = latency.run(clf, images[:1], runs=3, warmup=0)
    results = {
        "command": "python -m bench --quick", "machine": machine(), "idleness": {"start": idleness(0.1)}, "idle": False,
        "elapsed_s": 1.0, "latency": lat, "macs": macs.run(clf.spec.tflite_path),
        "size": size.run(clf.spec.tflite_path.parent, [ROOT / "requirements-edge.txt"]),
        "station": station_fields.StationReport(False, "python -m bench.station_bench", reason="not here"),
        "checks": [report.Check("c", "<= 3 ms", "0.1 ms", True)], "errors": {"app": "RuntimeError: boom"}, "skipped": {},
    }
    jpath, mpath = report.write(results, tmp_path)
    data = json.loads(jpath.read_text())
    assert data["latency"]["timings"][0]["name"] == "tflite_net"
    md = mpath.read_text()
    for text in ("# HematoVision benchmarks", "Machine idle during the run: **NO", "Latency per image", "## MACs",
                 "requirements-edge.txt", "Not measured: not here", "RuntimeError: boom", "| c | <= 3 ms | 0.1 ms | yes |"):
        assert text in md, text


STUB_APP = textwrap.dedent('''
    import gradio as gr

    def classify(image, model):
        if image is None:
            raise gr.Error("no image")
        return {"label": "red", "model": model}

    with gr.Blocks() as demo:
        image = gr.Image(type="filepath")
        model = gr.Radio(["wbc"], value="wbc")
        out = gr.JSON()
        image.change(classify, [image, model], out, api_name="classify")
    demo.queue(default_concurrency_limit=2)
    demo.launch()
''')


@pytest.mark.slow
def test_app_load_harness_on_a_stub_app(tmp_path, images):
    """The load harness itself (start, round trips, concurrent clients, RSS), on a stub Gradio app."""
    pytest.importorskip("gradio_client")
    from bench import app_load

    script = tmp_path / "stub_app.py"
    script.write_text(STUB_APP)
    rep = app_load.run(images, command=[sys.executable, str(script)], round_trips=6, warmup=1, clients=3, requests=4,
                       deadline_s=120)
    assert rep.round_trip is not None and rep.round_trip.n == 6 and rep.round_trip_errors == 0
    assert rep.load is not None and rep.load.sent == rep.load.ok == 12 and rep.load.errors == 0
    assert rep.peak_rss_mib >= rep.rss_after_start_mib > 20


@pytest.mark.slow
def test_python_m_bench_quick_end_to_end(tiny_models, tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench", "--model", str(tiny_models["tiny-int8"]), "--keras", str(tiny_models["keras"]),
                        "--quick", "--skip", "app,station,scaling", "--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "out")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "latest.json").read_text())
    assert {"latency", "macs", "size", "throughput", "machine", "idle", "checks"} <= set(data)
    assert data["throughput"]["runs"][1]["errors"] == 0
    assert "## CLI batch throughput" in (tmp_path / "out" / "latest.md").read_text()


def test_usage_errors_exit_2():
    r = subprocess.run([sys.executable, "-m", "bench", "--only", "nonsense"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown section" in r.stderr


def renamed_copy(source_json: Path, dest: Path, name: str, **fields) -> Path:
    """The model's files copied unchanged (sha256 intact) beside a JSON that names it ``name``, with ``fields`` changed."""
    from tests.conftest import copy_model

    data = json.loads(copy_model(source_json, dest).read_text(encoding="utf-8"))
    data.update(name=name, **fields)
    path = dest / f"{name}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def shipped_wbc():
    path = ROOT / "models" / "wbc.json"
    if not path.exists():
        pytest.skip("models/wbc.json not shipped")
    return path


def test_a_model_copied_under_a_new_name_benchmarks_from_its_json(shipped_wbc, tmp_path):
    """Dataset, examples folder and TTA views come from the model's JSON, never from its name."""
    from hematovision import load_model
    from bench.common import ModelFacts, example_images, model_facts, split_or_examples

    clf = load_model(renamed_copy(shipped_wbc, tmp_path / "models", "my-lab-cells"))
    facts = model_facts(clf)
    assert facts == ModelFacts(name="my-lab-cells", dataset="pbc", examples="wbc", views=len(clf.views))
    images, source = split_or_examples(tmp_path / "no-data", facts, 5)
    assert images == example_images("wbc") and f"{tmp_path / 'no-data'}/pbc not found" in source


def test_a_model_json_without_provenance_says_so_and_cycles_its_examples(shipped_wbc, tmp_path):
    from hematovision import load_model
    from bench.common import EXAMPLES, model_facts, split_or_examples

    path = renamed_copy(shipped_wbc, tmp_path, "bare", provenance={}, examples="all")
    facts = model_facts(load_model(path))
    assert facts.dataset is None and facts.examples == "all"
    images, source = split_or_examples(tmp_path, facts, 5)
    assert images and all(p.parent == EXAMPLES / "all" for p in images) and "names no provenance.data.dataset" in source


def test_the_app_section_runs_for_the_models_the_app_serves(shipped_wbc, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from bench.__main__ import _app

    renamed_copy(shipped_wbc, tmp_path, "my-lab-cells")
    monkeypatch.setenv("HEMATOVISION_MODELS", str(tmp_path))
    skipped = _app(SimpleNamespace(), "not-served", [])
    assert isinstance(skipped, str) and "my-lab-cells" in skipped and "'not-served'" in skipped


def test_interleaved_medians_runs_configs_in_turn_and_keeps_the_median():
    from bench.common import interleaved_medians

    calls, values = [], iter([5, 1, 9, 3, 7, 2])
    result = interleaved_medians(lambda c: (calls.append(c), (c, next(values)))[1], ["a", "b"], 3, key=lambda r: r[1])
    assert calls == ["a", "b", "a", "b", "a", "b"]  # interleaved, not one config after the other
    assert result == [(("a", 7), [("a", 5), ("a", 9), ("a", 7)]), (("b", 2), [("b", 1), ("b", 3), ("b", 2)])]


def test_log_check_times_the_start_up_check_on_a_log_of_the_stations_shape(tmp_path):
    from bench import log_check
    from hematovision.station.log import StationLog

    path = log_check.synthetic_log(tmp_path / "log.sqlite", 120)
    with StationLog(path, create=False) as log:
        assert log.quick_check() == "ok" and log.differential(1).total == 120
    result = log_check.run([50, 200], runs=2)
    assert [r["cells"] for r in result["rows"]] == [50, 200]
    assert all(0 < r["require_intact_s"]["median"] <= r["require_intact_s"]["max"] for r in result["rows"])
    assert result["rows"][0]["size_mb"] <= result["rows"][1]["size_mb"]
