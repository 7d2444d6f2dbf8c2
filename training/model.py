"""MobileNetV2 classifier: backbone -> last feature map -> GAP -> dropout -> dense logits.

That head shape is what makes on-device CAM exact: for GAP followed by a
linear layer, Grad-CAM's channel weights are the dense weights divided by the
number of feature-map cells, so the Pi needs only the dense weights and the
feature map (see ``hematovision/cam.py``).
"""

from __future__ import annotations

from pathlib import Path

import keras

BACKBONE_NAME = "backbone"
FEATURES_NAME = "features"
LOGITS_NAME = "logits"


def build_model(num_classes: int, *, img_size: int, alpha: float = 0.35, weights: str | None = None, dropout: float = 0.2,
                output_stride: int = 32) -> keras.Model:
    """``weights``: None/'none' (random), 'imagenet' (needs internet) or a .weights.h5 path.

    ``output_stride`` 16 runs MobileNetV2's last stage (blocks 13-16 and the
    1x1 conv) at twice the resolution - an 8x8 instead of a 4x4 feature map at
    128 px - so the CAM can point at the cell (see ``with_output_stride_16``).
    """
    base = keras.applications.MobileNetV2(
        input_shape=(img_size, img_size, 3), alpha=alpha, include_top=False,
        weights="imagenet" if weights == "imagenet" else None,
    )
    if weights not in (None, "none", "imagenet"):
        path = Path(weights)
        if not path.exists():
            raise FileNotFoundError(f"backbone weights {path} not found (expected e.g. shared/weights/mobilenet_v2_0.35_imagenet_notop.weights.h5)")
        base.load_weights(str(path))
    if output_stride == 16:
        base = with_output_stride_16(base)
    elif output_stride != 32:
        raise ValueError(f"output_stride must be 32 or 16, not {output_stride}")
    base.name = BACKBONE_NAME
    inputs = keras.Input((img_size, img_size, 3), name="image")
    fmap = keras.layers.Identity(name=FEATURES_NAME)(base(inputs))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(fmap)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    logits = keras.layers.Dense(num_classes, name=LOGITS_NAME)(x)
    model = keras.Model(inputs, logits, name="hematovision")
    set_backbone_trainable(model, False)
    return model


def with_output_stride_16(base: keras.Model) -> keras.Model:
    """The same MobileNetV2 with its last downsampling removed (DeepLab's output stride 16).

    block_13's stride-2 depthwise conv (after an asymmetric zero pad) becomes a
    stride-1 conv after a symmetric 1-pixel pad, and the later depthwise convs
    are dilated by 2 so each keeps the receptive field it was trained with
    (atrous convolution, Chen et al. 2017). Kernel shapes do not change, so the
    pretrained weights carry over one to one.
    """
    config = base.get_config()
    for layer in config["layers"]:
        name, cfg = layer["name"], layer["config"]
        if name == "block_13_pad":
            cfg["padding"] = ((1, 1), (1, 1))
        elif name == "block_13_depthwise":
            cfg["strides"] = (1, 1)
        elif name.startswith(("block_14_depthwise", "block_15_depthwise", "block_16_depthwise")) and layer["class_name"] == "DepthwiseConv2D":
            cfg["dilation_rate"] = (2, 2)
    clone = keras.Model.from_config(config)
    clone.set_weights(base.get_weights())
    return clone


def backbone(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE_NAME)


def set_backbone_trainable(model: keras.Model, trainable: bool, *, bn: str = "frozen") -> None:
    """Unfreeze the backbone's weights; BatchNormalization per ``bn``.

    ``frozen``: Keras 3 runs a BN layer with ``trainable=False`` in inference
    mode, so the ImageNet moving statistics are used during fine-tuning.
    ``momentum``: BN trains on batch statistics with momentum 0.9 so the moving
    averages keep up. Training BN with MobileNetV2's default momentum 0.999
    from a pretrained start makes validation collapse while the training
    accuracy climbs (shared/docs/training-notes.md), so that is never used.
    """
    if bn not in ("frozen", "momentum"):
        raise ValueError(f"bn must be 'frozen' or 'momentum', not {bn!r}")
    base = backbone(model)
    base.trainable = trainable
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = trainable and bn == "momentum"
            layer.momentum = 0.9


def with_feature_output(model: keras.Model) -> keras.Model:
    """Same weights, two outputs: (logits, last feature map) for export and Grad-CAM."""
    return keras.Model(model.inputs, [model.output, model.get_layer(FEATURES_NAME).output], name="hematovision_cam")
