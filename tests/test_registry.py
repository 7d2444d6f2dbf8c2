"""Model resolution: local folder, fake Hugging Face Hub, sha256 check, offline."""

import json
import shutil

import pytest

import hematovision
from hematovision import ModelFormatError, ModelIntegrityError, ModelNotFoundError, load_model, registry


@pytest.fixture
def models_dir(tiny_models, tmp_path):
    """A models/ folder holding a copy of the float tiny model under the product name 'wbc'."""
    src = tiny_models["tiny-float32"]
    folder = tmp_path / "models"
    folder.mkdir()
    meta = json.loads(src.read_text())
    for f in (meta["file"], meta["cam"]["head_file"]):
        shutil.copy(src.parent / f, folder / f)
    (folder / "wbc.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture
def fake_hub(monkeypatch, models_dir, tmp_path):
    """Replace huggingface_hub.hf_hub_download by a local 'Hub': files served from a folder."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    hub_dir = tmp_path / "hub"
    shutil.copytree(models_dir, hub_dir)
    cache = tmp_path / "cache"
    cache.mkdir()
    calls = []

    def fake_download(repo_id, filename, *, revision=None, local_files_only=False, **kw):
        calls.append((repo_id, filename, revision, local_files_only))
        cached = cache / filename
        if cached.exists():
            return str(cached)
        if local_files_only:
            raise LocalEntryNotFoundError("not in cache and offline")
        if not (hub_dir / filename).exists():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        shutil.copy(hub_dir / filename, cached)
        return str(cached)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    return calls


def test_local_name_resolves(models_dir):
    clf = load_model("wbc", models_dir=models_dir)
    assert clf.labels == ("red", "green", "blue")


def test_path_to_json_or_tflite(tiny_models):
    json_path = tiny_models["tiny-int8"]
    assert load_model(json_path).name == "tiny-int8"
    assert load_model(json_path.with_suffix(".tflite")).name == "tiny-int8"


def test_hub_download_with_pinned_revision(fake_hub, tmp_path):
    empty = tmp_path / "empty-models"
    empty.mkdir()
    clf = load_model("wbc", models_dir=empty, offline=False)
    assert clf.labels == ("red", "green", "blue")
    assert {c[2] for c in fake_hub} == {registry.HUB_MODELS["wbc"].revision}
    assert {c[1] for c in fake_hub} == {"wbc.json", "tiny-float32.tflite", "tiny-float32.head.npz"}
    # a second load, offline, comes from the cache
    assert load_model("wbc", models_dir=empty, offline=True).labels == clf.labels
    assert load_model("wbc", models_dir=empty, revision="abc123", offline=True)  # cached fake ignores revision


def test_offline_and_not_cached_says_what_is_missing(fake_hub, tmp_path, monkeypatch):
    empty = tmp_path / "empty-models"
    empty.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=r"wbc\.json.*offline mode.*hf download"):
        load_model("wbc", models_dir=empty)


def test_unknown_name(tmp_path):
    with pytest.raises(ModelNotFoundError, match="known names"):
        load_model("no-such-model", models_dir=tmp_path)


def test_missing_hub_file(fake_hub, tmp_path):
    (tmp_path / "hub" / "wbc.json").unlink()
    with pytest.raises(ModelNotFoundError, match="not found in Hub repo"):
        load_model("wbc", models_dir=tmp_path / "nothing", offline=False)


def test_checksum_mismatch(models_dir):
    tflite = next(models_dir.glob("*.tflite"))
    data = bytearray(tflite.read_bytes())
    data[-1] ^= 0xFF
    tflite.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_model("wbc", models_dir=models_dir)


def test_missing_tflite_and_missing_json(models_dir, tmp_path):
    next(models_dir.glob("*.tflite")).unlink()
    with pytest.raises(ModelNotFoundError, match="model file missing"):
        load_model("wbc", models_dir=models_dir)
    lone = tmp_path / "lone.tflite"
    lone.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="metadata JSON is missing"):
        load_model(lone)
    with pytest.raises(ModelNotFoundError, match="no such model file"):
        load_model(tmp_path / "absent.json")
    with pytest.raises(ModelNotFoundError, match="directory"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m.pop("labels"), "missing or has a bad field"),
        (lambda m: m.update(format_version=99), "format_version"),
        (lambda m: m.update(labels=["a", "b"]), "not \\(1, 2\\) logits"),
        (lambda m: m["input"].update(size=[64, 64]), "input shape"),
    ],
)
def test_bad_metadata(models_dir, mutate, message):
    path = models_dir / "wbc.json"
    meta = json.loads(path.read_text())
    mutate(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match=message):
        load_model("wbc", models_dir=models_dir)


def test_not_json(models_dir):
    (models_dir / "wbc.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="cannot read"):
        load_model("wbc", models_dir=models_dir)


def test_tflite_that_is_not_a_model_with_matching_sha(models_dir):
    tflite = next(models_dir.glob("*.tflite"))
    tflite.write_bytes(b"garbage garbage garbage")
    meta = json.loads((models_dir / "wbc.json").read_text())
    meta["sha256"] = registry.sha256_file(tflite)
    (models_dir / "wbc.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="not a TFLite model"):
        load_model("wbc", models_dir=models_dir)


def test_errors_subclass_builtins():
    assert issubclass(hematovision.InvalidImageError, ValueError)
    assert issubclass(hematovision.ModelNotFoundError, FileNotFoundError)
    assert issubclass(hematovision.ModelIntegrityError, ValueError)


def _metadata_folder(tmp_path, names):
    """A models folder holding the metadata JSON of the shipped wbc model under each of ``names`` (no .tflite:
    listing a folder reads only the JSON)."""
    from tests.conftest import ROOT

    shipped = ROOT / "models" / "wbc.json"
    if not shipped.exists():
        pytest.skip("models/wbc.json not shipped")
    folder = tmp_path / "models"
    folder.mkdir()
    for name in names:
        (folder / f"{name}.json").write_text(json.dumps({**json.loads(shipped.read_text()), "name": name}))
    return folder


@pytest.mark.parametrize("names", [("wbc", "wbc-crosslab"), ("lab-a", "wbc-crosslab"), ()])
def test_unknown_name_lists_what_the_models_folder_offers(names, tmp_path, monkeypatch):
    """The message's names are ``model_names()``: the folder's models (wbc-crosslab too), then the Hub's."""
    folder = _metadata_folder(tmp_path, names)
    monkeypatch.setenv("HEMATOVISION_MODELS", str(folder))
    offered = registry.model_names()
    assert set(names) <= set(offered) and set(registry.HUB_MODELS) <= set(offered)
    with pytest.raises(ModelNotFoundError) as info:
        registry.resolve("nope")
    assert f"known names: {', '.join(offered)};" in str(info.value)


def test_unknown_model_message_matches_the_help(tmp_path, monkeypatch, capsys):
    from hematovision.__main__ import main

    folder = _metadata_folder(tmp_path, ("wbc", "wbc-crosslab", "lab-a"))
    monkeypatch.setenv("HEMATOVISION_MODELS", str(folder))
    assert main(["classify", "--model", "nope", "--workers", "1", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    offered = registry.model_names()
    assert offered[:3] == ["lab-a", "wbc-crosslab", "wbc"] and f"known names: {', '.join(offered)};" in err
    with pytest.raises(SystemExit):
        main(["classify", "--help"])
    assert f"available:{','.join(offered)}" in "".join(capsys.readouterr().out.split())  # the same list
