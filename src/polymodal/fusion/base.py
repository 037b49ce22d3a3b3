"""The fusion contract: encoded inputs → `Fused` features for the heads, and a token memory.

`features` is [batch, branches, dim] and `weights` [batch, branches]: early fusion gives one
branch with weight 1; late fusion gives one branch per input and the heads' outputs are
combined with the weights. Heads never need to know which fusion ran.

`memory` [batch, tokens, dim] with `memory_mask` [batch, tokens] (True where a token is real)
keeps every input's tokens, so a decoder can cross-attend to them; its first tokens are
always real (the fused read-out, `readout` tokens of them), so no row's memory is empty even
with every input missing; the tokens after them are the inputs' own, input after input in the
order the fusion was given their names.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from polymodal.encoders.base import EncodedInput
from polymodal.registry import Registry

FUSIONS: Registry[nn.Module] = Registry("fusion")


class Fused(NamedTuple):
    features: torch.Tensor  # [batch, branches, dim]
    weights: torch.Tensor  # [batch, branches], rows sum to 1
    memory: torch.Tensor  # [batch, tokens, dim]
    memory_mask: torch.Tensor  # [batch, tokens], True where a token is real
    readout: int = 1  # the memory's first tokens, always real; the inputs' tokens follow
    # (start, end) in `memory` of each input whose tokens follow its clip's time in order
    # (audio, video), set by `MultimodalNet.fuse_encoded`: a text head aligns words to them
    timed: tuple[tuple[int, int], ...] = ()


def inputs_present(fused: Fused) -> torch.Tensor:
    """[batch] bool: whether any input's token is real in each row. The read-out tokens are
    real even when every input is missing, so a head that treats "nothing given" apart (a
    generator's unconditional path) asks this rather than the whole mask."""
    return fused.memory_mask[:, fused.readout :].any(dim=1)


def pooled(fused: Fused) -> torch.Tensor:
    """One vector per row, [batch, dim]: the branches' features weighted as the heads weigh
    their outputs. Early fusion's single branch (weight 1) is returned as it is; late fusion
    gives the weighted mean of its inputs' vectors over the inputs present. This is what
    `Model.embed` returns, so a search index holds what the heads read."""
    return (fused.features * fused.weights.unsqueeze(-1)).sum(dim=1)


def token_memory(
    first: torch.Tensor, encoded: dict[str, EncodedInput], names: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """`first` (always-real tokens [batch, n, dim]) followed by every input's tokens, with
    their masks: an absent input's tokens are all masked."""
    tokens = [first] + [encoded[name].tokens.to(first.dtype) for name in names]
    always = torch.ones(first.shape[:2], dtype=torch.bool, device=first.device)
    masks = [always] + [encoded[name].mask for name in names]
    return torch.cat(tokens, dim=1), torch.cat(masks, dim=1)


def masked_mean(encoded: EncodedInput) -> torch.Tensor:
    """Mean of the real tokens, [batch, dim]; zero where there are none (callers check)."""
    weights = encoded.mask.unsqueeze(-1).to(encoded.tokens.dtype)
    total = (encoded.tokens * weights).sum(dim=1)
    return total / weights.sum(dim=1).clamp(min=1.0)


class PooledInputs(nn.Module):
    """Pools each input to one vector; an absent input gets a learned 'missing' vector instead,
    so the model sees that it is missing rather than reading zeros as data."""

    def __init__(self, names: list[str], dim: int) -> None:
        super().__init__()
        self.names = names
        self.missing = nn.Parameter(torch.randn(len(names), dim) * 0.02)

    def forward(self, encoded: dict[str, EncodedInput]) -> tuple[torch.Tensor, torch.Tensor]:
        """([batch, inputs, dim], present [batch, inputs])."""
        pooled, present = [], []
        for index, name in enumerate(self.names):
            item = encoded[name]
            has = item.mask.any(dim=1)
            vector = torch.where(has[:, None], masked_mean(item), self.missing[index])
            pooled.append(vector)
            present.append(has)
        return torch.stack(pooled, dim=1), torch.stack(present, dim=1)
