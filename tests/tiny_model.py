"""Build tiny, honestly-labelled test models (not blood-cell models).

A small CNN learns in seconds to tell a red, green or blue disc on a white
background; it is exported through ``export.tflite.write_model`` exactly like
the shipped models, as float32 and int8. ``python -m tests.tiny_model DIR``
writes them for the edge-venv check in .ci/run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

LABELS = ("red", "green", "blue")
SIZE = 32
COLOURS = {"red": (200, 30, 40), "green": (30, 170, 40), "blue": (40, 50, 200)}


def disc_image(label: str, *, size: int = 96, rng: np.random.Generator | None = None) -> np.ndarray:
    """A white RGB image with one coloured disc (the 'cell') at a random place."""
    rng = rng or np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    r = rng.uniform(0.15, 0.25) * size
    cy, cx = rng.uniform(r, size - r, 2)
    img = np.full((size, size, 3), 245, np.uint8)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = COLOURS[label]
    noise = rng.normal(0, 4, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def build(out_dir: str | Path, *, seed: int = 0) -> dict[str, Path]:
    """Train the tiny model and write ``tiny-float32`` and ``tiny-int8`` into ``out_dir``."""
    import keras

    from export.tflite import write_model
    from hematovision.preprocessing import resize
    from hematovision.spec import InputSpec

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    spec = InputSpec(height=SIZE, width=SIZE)
    images = np.stack([resize(disc_image(LABELS[i % 3], rng=rng), SIZE, SIZE) for i in range(240)])
    labels = np.arange(240) % 3
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(x))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    fmap = keras.layers.Identity(name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(fmap)
    x = keras.layers.Dropout(0.1)(x)
    logits = keras.layers.Dense(len(LABELS), name="logits")(x)
    model = keras.Model(inputs, logits)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    x_in = images.astype(np.float32) * spec.scale + spec.offset
    model.fit(x_in, labels, epochs=15, batch_size=32, verbose=0)
    out = {}
    for quant in ("float32", "int8"):
        name = f"tiny-{quant}"
        out[name] = write_model(model, name=name, labels=LABELS, spec=spec, calibration_images=images, quant=quant, out_dir=out_dir,
                                extra={"task": "TEST FIXTURE: coloured discs, not a blood-cell model",
                                       "calibration": {"temperature": 1.0, "uncertain_threshold": 0.6}})
    out["keras"] = Path(out_dir) / "tiny.keras"
    model.save(out["keras"])
    return out


if __name__ == "__main__":
    for name, path in build(sys.argv[1] if len(sys.argv) > 1 else "tiny-models").items():
        print(name, path)
