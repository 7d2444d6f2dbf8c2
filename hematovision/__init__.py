"""HematoVision: blood-cell classification that runs on a Raspberry Pi.

Research use only; not a diagnostic device.

Importing this package loads only numpy, OpenCV and Pillow; the TFLite
runtime is loaded when a model is, and TensorFlow, Gradio and Open3D never.
"""

__version__ = "0.1.0"

from .classifier import Classifier, Prediction, load_model
from .errors import (
    HematoVisionError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidImageError,
    ModelFormatError,
    ModelIntegrityError,
    ModelNotFoundError,
    RuntimeNotAvailableError,
)
from .images import load_image
from .spec import ModelSpec

__all__ = [
    "Classifier", "Prediction", "load_model", "load_image", "ModelSpec", "HematoVisionError", "ImageNotFoundError",
    "ImageTooLargeError", "InvalidImageError", "ModelFormatError", "ModelIntegrityError", "ModelNotFoundError",
    "RuntimeNotAvailableError", "__version__",
]
