"""polymodal: multimodal models over tables of text, images, audio, video, numbers and categories."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Model", "__version__"]

if TYPE_CHECKING:
    from polymodal.model import Model


def __getattr__(name: str) -> object:
    """`polymodal.Model` loads torch and Lightning on first use, not on `import polymodal`, so
    the command line answers quickly (and fails quickly on bad arguments)."""
    if name == "Model":
        from polymodal.model import Model

        return Model
    raise AttributeError(f"module 'polymodal' has no attribute {name!r}")
