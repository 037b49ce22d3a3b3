"""A CNN over the log-mel spectrogram; frequency is pooled away, time steps become tokens."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.config import ModelSettings
from polymodal.encoders.base import ENCODERS, EncodedInput, lengths_mask, small_cnn
from polymodal.encoders.pretrained import PretrainedEncoder
from polymodal.modalities.audio.preprocess import AudioState

DOWNSAMPLE = 8  # three stride-2 stages


@ENCODERS.register("audio_cnn", modality="audio", default=True)
class AudioCNN(nn.Module):
    """[batch, mels, frames] → [batch, ceil(frames / 8), dim]."""

    time_ordered = True  # its tokens follow the clip's time (see `Fused.timed`)

    def __init__(self, state: AudioState, settings: ModelSettings) -> None:
        super().__init__()
        dim = settings.dim
        self.features = small_cnn(1, dim, 2, state.settings.n_mels, state.frames)
        self.position = nn.Parameter(torch.randn(1, -(-state.frames // DOWNSAMPLE), dim) * 0.02)
        self.dropout = nn.Dropout(settings.dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, values: torch.Tensor, present: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> EncodedInput:
        grid = self.features(values.float()[:, None])  # [batch, dim, mels / 8, frames / 8]
        tokens = grid.mean(dim=2).transpose(1, 2)
        tokens = self.norm(self.dropout(tokens + self.position[:, : tokens.shape[1]]))
        steps = tokens.shape[1]
        if lengths is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        else:
            mask = lengths_mask(-(-lengths // DOWNSAMPLE), steps)
        return EncodedInput(tokens, mask & present[:, None])


ENCODERS.register("pretrained_audio", modality="audio", pretrained=True)(PretrainedEncoder)
