"""One token per number column: the value through a small MLP."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.config import ModelSettings
from polymodal.encoders.base import ENCODERS, EncodedInput
from polymodal.modalities.number.preprocess import NumberState


@ENCODERS.register("number_linear", modality="number", default=True)
class NumberEncoder(nn.Module):
    def __init__(self, state: NumberState, settings: ModelSettings) -> None:
        super().__init__()
        self.project = nn.Sequential(
            nn.Linear(1, settings.dim), nn.GELU(), nn.LayerNorm(settings.dim)
        )

    def forward(
        self, values: torch.Tensor, present: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> EncodedInput:
        tokens = self.project(values.float().view(-1, 1, 1))
        return EncodedInput(tokens, present[:, None])
