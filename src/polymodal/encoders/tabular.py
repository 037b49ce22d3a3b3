"""One token per number column (value × learned vector + bias) and per category column."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.config import ModelSettings
from polymodal.data.tabular import CategoryState, NumberState
from polymodal.encoders.base import ENCODERS, EncodedInput


@ENCODERS.register("number_linear", modality="number")
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


@ENCODERS.register("category_embedding", modality="category")
class CategoryEncoder(nn.Module):
    def __init__(self, state: CategoryState, settings: ModelSettings) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(state.vocabulary) + 2, settings.dim)
        self.dropout = nn.Dropout(settings.dropout)

    def forward(
        self, values: torch.Tensor, present: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> EncodedInput:
        tokens = self.dropout(self.embed(values.long()))[:, None]
        return EncodedInput(tokens, present[:, None])
