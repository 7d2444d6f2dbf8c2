import os
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def data_dir() -> Path:
    """The shared data folder: $HEMATOVISION_DATA, else ../shared/data beside the checkout."""
    return Path(os.environ.get("HEMATOVISION_DATA", ROOT.parent / "shared" / "data"))


def copy_model(json_path: Path, dest: Path) -> Path:
    """Copy a model's files (<name>.json, .tflite, .head.npz, ...) into ``dest``; returns the copied JSON."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in json_path.parent.glob(json_path.stem + "*"):
        shutil.copy(f, dest / f.name)
    return dest / json_path.name


def require_data(*parts: str) -> Path:
    path = data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: this test needs the real datasets (set HEMATOVISION_DATA)")
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny TFLite test models (float32 and int8), built once per session with TensorFlow."""
    pytest.importorskip("tensorflow", reason="building test models needs TensorFlow (requirements-dev.txt)")
    from tests.tiny_model import build

    return build(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def disc():
    from tests.tiny_model import disc_image

    return lambda label, size=96, seed=0: disc_image(label, size=size, rng=np.random.default_rng(seed))
