"""Pretrained encoders for text, images, audio and video (transformers or timm backbones).

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
from polymodal.encoders.base import ENCODERS, EncodedInput, lengths_mask
from polymodal.hub import apply_mode, build_backbone, hidden_size, load_backbone

VIDEO_MODEL_KEY = "num_frames"  # video transformers (VideoMAE, TimeSformer) read whole clips


class PretrainedEncoder(nn.Module):
    def __init__(self, state: BaseModel, settings: ModelSettings) -> None:
        super().__init__()
        self.kind = state.kind
        self.pretrained = state.pretrained
        self.choice = state.pretrained.choice
        backbone = build_backbone(self.pretrained.library, self.pretrained.architecture, self.kind)
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
        backbone = load_backbone(self.pretrained.resolved(), self.kind)
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
        hidden, mask = backbone_tokens(self.backbone, self.kind, self.pretrained, values, lengths)
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


for _kind in ("text", "image", "audio", "video"):
    ENCODERS.register(f"pretrained_{_kind}", modality=_kind, pretrained=True)(PretrainedEncoder)


def backbone_tokens(
    backbone: nn.Module,
    kind: str,
    pretrained: BaseModel,
    values: torch.Tensor,
    lengths: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the backbone on one modality's features: ([batch, steps, width], mask)."""
    if kind == "text":
        mask = lengths_mask(lengths, values.shape[1]) if lengths is not None else values != 0
        hidden = backbone(input_ids=values.long(), attention_mask=mask.long()).last_hidden_state
        return hidden, mask
    if kind == "audio":
        return audio_tokens(backbone, pretrained, values.float(), lengths)
    if kind == "video" and VIDEO_MODEL_KEY in pretrained.architecture:
        hidden = as_tokens(backbone(pixel_values=values.float()).last_hidden_state)
    elif kind == "video":  # an image model on each frame, one token per frame
        batch, frames = values.shape[:2]
        per_frame = image_tokens(backbone, pretrained.library, values.flatten(0, 1).float())
        hidden = per_frame.mean(dim=1).view(batch, frames, -1)
    else:
        hidden = image_tokens(backbone, pretrained.library, values.float())
    return hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)


def image_tokens(backbone: nn.Module, library: str, images: torch.Tensor) -> torch.Tensor:
    if library == "timm":
        return as_tokens(backbone.forward_features(images))
    return as_tokens(backbone(pixel_values=images).last_hidden_state)


def audio_tokens(
    backbone: nn.Module, pretrained: BaseModel, values: torch.Tensor, lengths: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveform models (wav2vec2, HuBERT) get an attention mask where their extractor asks
    for one, and their output mask from the convolution's length arithmetic; spectrogram
    models (Whisper, AST) read fixed-size inputs."""
    arguments = {pretrained.input_name or "input_values": values}
    waveform = values.dim() == 2 and lengths is not None
    if waveform and pretrained.feature_extractor.get("return_attention_mask"):
        arguments["attention_mask"] = lengths_mask(lengths, values.shape[1]).long()
    hidden = as_tokens(backbone(**arguments).last_hidden_state)
    steps = hidden.shape[1]
    if waveform and hasattr(backbone, "_get_feat_extract_output_lengths"):
        output_lengths = backbone._get_feat_extract_output_lengths(lengths).clamp(max=steps)
        return hidden, lengths_mask(output_lengths, steps)
    return hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)


def as_tokens(hidden: torch.Tensor) -> torch.Tensor:
    """A CNN's [batch, channels, h, w] map → [batch, h·w, channels]; tokens pass through."""
    return hidden.flatten(2).transpose(1, 2) if hidden.dim() == 4 else hidden


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
