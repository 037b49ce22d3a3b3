"""Late fusion: one head per input; their outputs are averaged with learned weights
over the inputs present in each row."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.config import ModelSettings
from polymodal.encoders.base import EncodedInput
from polymodal.fusion.base import FUSIONS, Fused, PooledInputs, token_memory


@FUSIONS.register("late")
class LateFusion(nn.Module):
    def __init__(self, names: list[str], settings: ModelSettings) -> None:
        super().__init__()
        self.branches = len(names)  # how many head outputs the heads must make
        self.pool = PooledInputs(names, settings.dim)
        self.logit_weights = nn.Parameter(torch.zeros(len(names)))

    def forward(self, encoded: dict[str, EncodedInput]) -> Fused:
        pooled, present = self.pool(encoded)
        none_present = ~present.any(dim=1, keepdim=True)
        usable = present | none_present  # a row with nothing falls back to every branch
        logits = self.logit_weights.expand_as(present).masked_fill(~usable, float("-inf"))
        memory, mask = token_memory(pooled, encoded, self.pool.names)
        return Fused(
            pooled, torch.softmax(logits, dim=1), memory, mask, readout=len(self.pool.names)
        )
