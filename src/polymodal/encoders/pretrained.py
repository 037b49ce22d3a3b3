"""Pretrained encoders (transformers or timm backbones) for the modalities that have them.

The backbone's output tokens are summarised to a few tokens (means over equal runs of the real
tokens), projected to the model width and normalised, so they meet the same contract as our
own encoders: `[batch, tokens, dim]` + mask. A frozen backbone's summary depends only on its
input, which is what lets training cache it (polymodal.training.embeddings).
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import nn

from polymodal.config import ModelSettings
from polymodal.encoders.base import EncodedInput
from polymodal.hub import apply_mode, build_backbone, hidden_size, load_backbone
from polymodal.modalities.base import modality


class PretrainedEncoder(nn.Module):
    """Registered by each modality that has a pretrained adapter (`pretrained_image`, ...);
    the modality says how its backbone gives tokens."""

    def __init__(self, state: BaseModel, settings: ModelSettings) -> None:
        super().__init__()
        self.kind = state.kind
        self.modality = modality(state.kind)
        self.pretrained = state.pretrained
        self.choice = state.pretrained.choice
        backbone = build_backbone(
            self.pretrained.library, self.pretrained.architecture, self.modality.tower
        )
        self.backbone = apply_mode(backbone, self.choice)
        width = hidden_size(self.backbone)
        self.project = nn.Linear(width, settings.dim)
        self.dropout = nn.Dropout(settings.dropout)
        self.norm = nn.LayerNorm(settings.dim)
        self._fingerprint: str | None = None

    @property
    def frozen(self) -> bool:
        return self.choice.mode == "frozen"

    def load_pretrained(self) -> None:
        """Replace the randomly built backbone by the source's trained one (at fit time)."""
        backbone = load_backbone(self.pretrained.resolved(), self.modality.tower)
        self.backbone = apply_mode(backbone, self.choice)
        self._fingerprint = None

    def train(self, mode: bool = True) -> PretrainedEncoder:
        """A frozen backbone stays in eval mode (no dropout, fixed norms): its output must
        not depend on the training step, or cached embeddings would be wrong."""
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(
        self, values: torch.Tensor, present: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> EncodedInput:
        summary, mask = self.embed(values, present, lengths)
        return self.from_embedding(summary, mask, present)

    def embed(
        self, values: torch.Tensor, present: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's tokens, summarised: ([batch, ≤ tokens, width], mask)."""
        hidden, mask = self.modality.backbone_tokens(
            self.backbone, self.pretrained, values, lengths
        )
        return summarise(hidden.float(), mask, self.choice.tokens)

    def from_embedding(
        self, summary: torch.Tensor, mask: torch.Tensor, present: torch.Tensor
    ) -> EncodedInput:
        tokens = self.norm(self.dropout(self.project(summary)))
        return EncodedInput(tokens, mask & present[:, None])

    def fingerprint(self) -> str:
        """Identifies the frozen backbone's weights and the summary settings (for the
        embedding cache): a hash of every tensor's bytes."""
        if self._fingerprint is None:
            digest = hashlib.sha256(f"{self.kind}:{self.choice.tokens}:v1".encode())
            for name, tensor in sorted(self.backbone.state_dict().items()):
                digest.update(name.encode())
                digest.update(
                    tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy()
                )
            self._fingerprint = digest.hexdigest()[:32]
        return self._fingerprint


def summarise(
    hidden: torch.Tensor, mask: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """At most `count` tokens per row: the means of `count` equal runs of its real tokens, in
    order. Keeps coarse position (start, middle, end of a sentence or clip; image bands) at a
    fixed, small size, whatever the backbone's sequence length."""
    if hidden.shape[1] <= count:
        return hidden, mask
    real = mask.long()
    lengths = real.sum(dim=1, keepdim=True).clamp(min=1)
    position = real.cumsum(dim=1) - 1
    segment = (position * count // lengths).clamp(0, count - 1)
    weights = F.one_hot(segment, count).to(hidden.dtype) * mask[..., None].to(hidden.dtype)
    totals = weights.transpose(1, 2) @ hidden
    counts = weights.sum(dim=1)
    return totals / counts.clamp(min=1)[..., None], counts > 0
