"""polymodal: multimodal models over tables of text, images, audio, video, numbers and categories."""

from __future__ import annotations

from typing import TYPE_CHECKING

from polymodal.version import __version__

__all__ = ["Model", "__version__", "apply_preset"]

if TYPE_CHECKING:
    from polymodal.model import Model
    from polymodal.presets import apply_preset


def __getattr__(name: str) -> object:
    """`polymodal.Model` loads torch and Lightning on first use, not on `import polymodal`, so
    the command line answers quickly (and fails quickly on bad arguments)."""
    if name == "Model":
        from polymodal.model import Model

        return Model
    if name == "apply_preset":
        from polymodal.presets import apply_preset

        return apply_preset
    raise AttributeError(f"module 'polymodal' has no attribute {name!r}")
