"""Error classes of the HematoVision core.

Each subclasses the builtin a caller would naturally catch (``ValueError`` for
bad input, ``FileNotFoundError`` for missing things) and says how to fix it.
"""

from __future__ import annotations


class HematoVisionError(Exception):
    """Base class of every error raised on purpose by hematovision."""


class InvalidImageError(HematoVisionError, ValueError):
    """The input is not an image the classifier can use (corrupt, wrong kind, NaN...)."""


class ImageTooLargeError(InvalidImageError):
    """The image has more pixels than the budget; refused before it is decoded."""


class ZStackError(InvalidImageError):
    """A file or array is not a usable z-stack: a single page, channels or time points, pages of different sizes."""


class ZStackTooLargeError(ZStackError, ImageTooLargeError):
    """A z-stack over the voxel, page or page-size budget; refused from its header, before any pixel is decoded."""


class ImageNotFoundError(HematoVisionError, FileNotFoundError):
    """An image path that does not exist."""


class ModelNotFoundError(HematoVisionError, FileNotFoundError):
    """No model under that name or path, locally or in the Hub cache."""


class ModelFormatError(HematoVisionError, ValueError):
    """A model file or its JSON metadata is malformed or does not match."""


class ModelIntegrityError(HematoVisionError, ValueError):
    """The .tflite file's sha256 differs from the one recorded in its JSON."""


class RuntimeNotAvailableError(HematoVisionError, ImportError):
    """No TFLite runtime (ai-edge-litert, tflite-runtime or tensorflow) is installed."""


class SourceError(HematoVisionError, OSError):
    """A frame source (camera, Picamera2, video file, watched folder) cannot be opened or read."""


class SourceSpecError(HematoVisionError, ValueError):
    """A malformed ``--source`` string; the forms are camera:INDEX, picamera[:INDEX], folder:DIR, video:FILE."""


class SegmentationError(HematoVisionError, ValueError):
    """No cell (nucleus or stained object) could be segmented in the image."""


class NoRedCellsError(HematoVisionError, ValueError):
    """No image had enough clear red cells to measure the scale (``hematovision calibrate``)."""


class MorphologyReferenceError(HematoVisionError, ValueError):
    """A morphology reference file is malformed, or has no entry for the requested label."""


class StationLogError(HematoVisionError, OSError):
    """The station's SQLite log cannot be opened or written (wrong file, newer schema, disk full...)."""


class MissingDependencyError(HematoVisionError, ImportError):
    """An optional library (scikit-image, Open3D, tifffile) needed by this feature is not installed."""
