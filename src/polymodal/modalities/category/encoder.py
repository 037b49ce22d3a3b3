"""One token per category column: a learned vector per value."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.config import ModelSettings
from polymodal.encoders.base import ENCODERS, EncodedInput
from polymodal.modalities.category.preprocess import CategoryState


@ENCODERS.register("category_embedding", modality="category", default=True)
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
