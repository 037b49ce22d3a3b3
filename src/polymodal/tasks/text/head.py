"""The head of a text target: a transformer decoder over the fused token memory.

While training it is given the target tokens (teacher forcing) and returns next-token logits;
otherwise it generates, greedy or by beam search as the task's decoding settings say, and
returns the hypotheses packed in one float tensor so that they travel through batching and
concatenation like any other head's output: [batch, nbest, 1 + max_length], holding each
hypothesis' log-probability and then its token ids (0 = padding).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from polymodal.fusion.base import Fused
from polymodal.tasks.text.decoder import TextDecoder
from polymodal.tasks.text.search import beam_search, greedy


class Decoding(Protocol):
    """What the head reads at each call (the task's current decoding settings)."""

    beam: int
    nbest: int
    length_penalty: float
    max_length: int
    generate_length: int | None
    pad_id: int
    bos_id: int
    eos_id: int


class TextHead(nn.Module):
    def __init__(
        self,
        settings: Decoding,
        vocab_size: int,
        dim: int,
        layers: int,
        heads: int,
        dropout: float,
        decoder: nn.Module | None = None,
    ) -> None:
        """`decoder`: one with `TextDecoder`'s interface to use instead of building ours
        (a pretrained one: polymodal.tasks.text.pretrained.PretrainedDecoder)."""
        super().__init__()
        self.settings = settings
        if decoder is None:
            decoder = TextDecoder(
                vocab_size, dim, layers=layers, heads=heads, max_length=settings.max_length,
                dropout=dropout, pad_id=settings.pad_id, bos_id=settings.bos_id,
                eos_id=settings.eos_id,
            )  # fmt: skip
        self.decoder = decoder

    def forward(self, fused: Fused, target: torch.Tensor | None = None) -> torch.Tensor:
        if target is not None:
            return self.decoder(target[:, :-1], fused.memory, fused.memory_mask)
        return self.generate(fused.memory, fused.memory_mask)

    def generate(self, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        settings = self.settings
        length = min(settings.generate_length or settings.max_length, settings.max_length)
        ids, scores = self.search(memory, memory_mask, length)
        packed = torch.full(
            (*ids.shape[:2], 1 + settings.max_length), float(settings.pad_id), device=ids.device
        )
        packed[..., 0] = scores.float()
        packed[..., 1 : 1 + ids.shape[2]] = ids.float()
        return packed

    def search(
        self, memory: torch.Tensor, memory_mask: torch.Tensor, length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hypotheses of at most `length` tokens: (ids [batch, nbest, L], log-probabilities
        [batch, nbest]), by beam search or greedily as the settings say."""
        settings = self.settings
        if settings.beam > 1:
            return beam_search(
                self.decoder, memory, memory_mask, beam=settings.beam, max_length=length,
                length_penalty=settings.length_penalty, nbest=settings.nbest,
            )  # fmt: skip
        ids, scores = greedy(self.decoder, memory, memory_mask, max_length=length)
        return ids[:, None], scores[:, None]
