"""Early fusion: pool each input, concatenate, mix with an MLP."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.config import ModelSettings
from polymodal.encoders.base import EncodedInput
from polymodal.fusion.base import FUSIONS, Fused, PooledInputs, token_memory


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    def __init__(self, names: list[str], settings: ModelSettings) -> None:
        super().__init__()
        self.branches = 1  # how many head outputs the heads must make
        dim = settings.dim
        self.pool = PooledInputs(names, dim)
        self.mix = nn.Sequential(
            nn.LayerNorm(dim * len(names)),
            nn.Linear(dim * len(names), dim),
            nn.GELU(),
            nn.Dropout(settings.dropout),
        )

    def forward(self, encoded: dict[str, EncodedInput]) -> Fused:
        pooled, _ = self.pool(encoded)
        features = self.mix(pooled.flatten(1))[:, None]
        memory, mask = token_memory(features, encoded, self.pool.names)
        return Fused(features, torch.ones(features.shape[:2], device=features.device), memory, mask)
