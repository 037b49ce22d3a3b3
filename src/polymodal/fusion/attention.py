"""Cross-modal attention: a transformer over every input's tokens, tagged with an input
embedding, read out through a [CLS] token. Masked tokens are never attended to; the whole
transformed sequence ([CLS] first) is the token memory a decoder can attend to."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.config import ModelSettings
from polymodal.encoders.base import EncodedInput, transformer
from polymodal.fusion.base import FUSIONS, Fused


@FUSIONS.register("attention")
class AttentionFusion(nn.Module):
    def __init__(self, names: list[str], settings: ModelSettings) -> None:
        super().__init__()
        self.branches = 1  # how many head outputs the heads must make
        dim = settings.dim
        self.names = names
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.input_embedding = nn.Parameter(torch.randn(len(names), dim) * 0.02)
        self.blocks = transformer(dim, settings.layers, settings.heads, settings.dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, encoded: dict[str, EncodedInput]) -> Fused:
        batch = next(iter(encoded.values())).tokens.shape[0]
        tokens = [self.cls.expand(batch, -1, -1)]
        masks = [torch.ones(batch, 1, dtype=torch.bool, device=self.cls.device)]
        for index, name in enumerate(self.names):
            tokens.append(encoded[name].tokens + self.input_embedding[index])
            masks.append(encoded[name].mask)
        mask = torch.cat(masks, dim=1)
        sequence = self.norm(self.blocks(torch.cat(tokens, dim=1), src_key_padding_mask=~mask))
        features = sequence[:, :1]
        return Fused(features, torch.ones(batch, 1, device=features.device), sequence, mask)
