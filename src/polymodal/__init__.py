"""polymodal: multimodal models over tables of text, images, audio, video, numbers and categories."""

__version__ = "0.1.0"

from polymodal.model import Model  # noqa: E402  (after __version__, which model.py reads)

__all__ = ["Model", "__version__"]
