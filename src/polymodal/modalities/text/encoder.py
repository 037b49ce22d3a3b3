"""A small transformer over the tokens of a tokenizer trained on the user's text."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.config import ModelSettings
from polymodal.encoders.base import (
    ENCODERS,
    EncodedInput,
    lengths_mask,
    run_transformer,
    transformer,
)
from polymodal.encoders.pretrained import PretrainedEncoder
from polymodal.modalities.text.preprocess import TextState


@ENCODERS.register("text_transformer", modality="text", default=True)
class TextTransformer(nn.Module):
    def __init__(self, state: TextState, settings: ModelSettings) -> None:
        super().__init__()
        dim = settings.dim
        self.embed = nn.Embedding(state.vocab_size, dim, padding_idx=0)
        self.position = nn.Parameter(torch.randn(1, state.max_tokens, dim) * 0.02)
        self.dropout = nn.Dropout(settings.dropout)
        self.blocks = transformer(dim, settings.layers, settings.heads, settings.dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, values: torch.Tensor, present: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> EncodedInput:
        steps = values.shape[1]
        mask = lengths_mask(lengths, steps) if lengths is not None else values != 0
        mask = mask & present[:, None]
        tokens = self.dropout(self.embed(values) + self.position[:, :steps])
        return EncodedInput(self.norm(run_transformer(self.blocks, tokens, mask)), mask)


ENCODERS.register("pretrained_text", modality="text", pretrained=True)(PretrainedEncoder)
