"""JSON summaries of attributions: where the attribution mass lies in each input.

Each modality summarises its own (`Modality.summarise`): a 4 × 4 grid for images, frames and
mel bands for audio, frames for video, tokens for text, one number for tabular inputs.
"""

from __future__ import annotations

from polymodal.explain.attributions import InputAttribution
from polymodal.modalities import modality
from polymodal.modalities.common import shares, valid_steps
from polymodal.model import Model

__all__ = ["shares", "summarise", "valid_steps"]


def summarise(model: Model, item: InputAttribution) -> dict:
    """A JSON summary: where the attribution mass lies (shares of sum |attribution|)."""
    return modality(item.kind).summarise(model.schema_.input(item.input), item)
