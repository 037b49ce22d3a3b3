"""The head of a text target: a transformer decoder over the fused token memory.

While training it is given the target tokens (teacher forcing) and returns next-token logits;
otherwise it generates, greedy or by beam search as the task's decoding settings say, and
returns the hypotheses packed in one float tensor so that they travel through batching and
concatenation like any other head's output: [batch, nbest, 1 + max_length], holding each
hypothesis' log-probability and then its token ids (0 = padding).

With `ctc_weight` > 0, training also scores a CTC loss on each audio or video input's own
tokens in the memory (hybrid CTC/attention, as ESPnet trains speech recognisers): CTC can only
read the words in order, once each, which is meant to teach the memory an alignment that keeps
the attention decoder from skipping or repeating words. Decoding stays the decoder's alone.

With `memory_layers` > 0, a transformer encoder runs over the fused memory first, as in any
encoder-decoder: an encoder's tokens each see only their own stretch of input (a CNN's
receptive field); these layers let each token read its neighbours and the other inputs' tokens
(the sound's from the picture's) before the decoder does. On the spoken digits one layer took
the audio-only WER from 0.050 to 0.031 clean and 0.082 to 0.068 at white 0 dB (BENCHMARKS.md).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from polymodal.encoders.base import run_transformer, transformer
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


class TeacherForced(NamedTuple):
    """A text head's training outputs when it also scores CTC."""

    logits: torch.Tensor  # [batch, length, vocab], next-token logits for target[:, 1:]
    ctc: torch.Tensor  # scalar: CTC loss per target token, mean over the timed inputs


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
        ctc_weight: float = 0.0,
        memory_layers: int = 0,
    ) -> None:
        """`decoder`: one with `TextDecoder`'s interface to use instead of building ours
        (a pretrained one: polymodal.tasks.text.pretrained.PretrainedDecoder); `ctc_weight`
        > 0: training also scores CTC on the timed inputs; `memory_layers`: encoder layers
        over the memory before decoding (both in the module docstring)."""
        super().__init__()
        self.settings = settings
        if decoder is None:
            decoder = TextDecoder(
                vocab_size, dim, layers=layers, heads=heads, max_length=settings.max_length,
                dropout=dropout, pad_id=settings.pad_id, bos_id=settings.bos_id,
                eos_id=settings.eos_id,
            )  # fmt: skip
        self.decoder = decoder
        # CTC's blank is the padding id, which no target holds
        self.ctc = nn.Linear(dim, vocab_size) if ctc_weight > 0 else None
        self.memory_encoder = None
        if memory_layers:  # pre-norm layers, so the stream they return is normed at the end
            self.memory_encoder = transformer(dim, memory_layers, heads, dropout)
            self.memory_norm = nn.LayerNorm(dim)

    def forward(
        self, fused: Fused, target: torch.Tensor | None = None
    ) -> torch.Tensor | TeacherForced:
        fused = self.in_context(fused)
        if target is None:
            return self.generate(fused.memory, fused.memory_mask)
        logits = self.decoder(target[:, :-1], fused.memory, fused.memory_mask)
        if self.ctc is None or not fused.timed:
            return logits
        return TeacherForced(logits, self.ctc_loss(fused, target))

    def in_context(self, fused: Fused) -> Fused:
        """The fused memory after the memory encoder, masks and spans unchanged (masked tokens
        are neither read nor, downstream, attended to)."""
        if self.memory_encoder is None:
            return fused
        memory = run_transformer(self.memory_encoder, fused.memory, fused.memory_mask)
        return fused._replace(memory=self.memory_norm(memory))

    def ctc_loss(self, fused: Fused, target: torch.Tensor) -> torch.Tensor:
        """CTC loss per target token of each timed input's tokens, averaged over the inputs.
        Rows where the input is missing, or whose text is unknown or empty, are left out."""
        settings = self.settings
        labels = target[:, 1:].long()
        special = torch.tensor([settings.pad_id, settings.bos_id, settings.eos_id])
        real = ~torch.isin(labels, special.to(labels.device))
        lengths = real.sum(dim=1)
        losses = []
        for start, end in fused.timed:
            steps = fused.memory_mask[:, start:end].sum(dim=1)
            rows = (steps > 0) & (lengths > 0)
            if not rows.any():
                continue
            scores = self.ctc(fused.memory[rows, start:end]).float().log_softmax(dim=-1)
            total = F.ctc_loss(
                scores.transpose(0, 1), labels[rows][real[rows]], steps[rows], lengths[rows],
                blank=settings.pad_id, reduction="sum", zero_infinity=True,
            )  # fmt: skip
            losses.append(total / lengths[rows].sum())
        if not losses:
            return fused.memory.new_zeros((), dtype=torch.float32)
        return torch.stack(losses).mean()

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
