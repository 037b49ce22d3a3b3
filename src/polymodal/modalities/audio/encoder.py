"""A CNN over the log-mel spectrogram; frequency is pooled away, time steps become tokens."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.config import ModelSettings
from polymodal.encoders.base import ENCODERS, EncodedInput, lengths_mask, small_cnn
from polymodal.encoders.pretrained import PretrainedEncoder
from polymodal.modalities.audio.preprocess import AudioState


@ENCODERS.register("audio_cnn", modality="audio", default=True)
class AudioCNN(nn.Module):
    """[batch, mels, frames] → [batch, ceil(frames / 8), dim]: a token per 80 ms of clip at
    the default 10 ms hop. Frequency is halved three times whatever the time stride."""

    time_ordered = True  # its tokens follow the clip's time (see `Fused.timed`)
    time_downsample = 8  # frames per token: 2 (first stage) × 2 × this / 4 (third)

    def __init__(self, state: AudioState, settings: ModelSettings) -> None:
        super().__init__()
        dim = settings.dim
        third_stride = (2, self.time_downsample // 4)
        self.features = small_cnn(1, dim, 2, state.settings.n_mels, state.frames, third_stride)
        steps = -(-state.frames // self.time_downsample)
        self.position = nn.Parameter(torch.randn(1, steps, dim) * 0.02)
        self.dropout = nn.Dropout(settings.dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, values: torch.Tensor, present: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> EncodedInput:
        grid = self.features(values.float()[:, None])  # [batch, dim, mels / 8, tokens]
        tokens = grid.mean(dim=2).transpose(1, 2)
        tokens = self.norm(self.dropout(tokens + self.position[:, : tokens.shape[1]]))
        steps = tokens.shape[1]
        if lengths is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        else:
            mask = lengths_mask(-(-lengths // self.time_downsample), steps)
        return EncodedInput(tokens, mask & present[:, None])


@ENCODERS.register("audio_cnn_fine", modality="audio")
class FineAudioCNN(AudioCNN):
    """A token per 40 ms, for speech, where a 50 ms pause between two words can fall inside
    one 80 ms token. Twice the tokens for fusion to attend over. On the spoken digits it moved
    the WER by less than the spread between runs (BENCHMARKS.md), so it is not the default."""

    time_downsample = 4


ENCODERS.register("pretrained_audio", modality="audio", pretrained=True)(PretrainedEncoder)
