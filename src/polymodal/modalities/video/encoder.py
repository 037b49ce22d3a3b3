"""Each sampled frame through the image CNN, then a temporal transformer across frames."""

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
from polymodal.modalities.image.encoder import ImageCNN
from polymodal.modalities.video.preprocess import VideoState


@ENCODERS.register("video_frames", modality="video", default=True)
class VideoEncoder(nn.Module):
    """[batch, frames, 3, H, W] → [batch, frames, dim]: one token per frame. With `lengths`
    (clips read at a frame rate, padded to the crop), frames past a clip's length are masked:
    the temporal transformer does not attend to them and their tokens are not real."""

    time_ordered = True  # its tokens follow the clip's time (see `Fused.timed`)

    def __init__(self, state: VideoState, settings: ModelSettings) -> None:
        super().__init__()
        dim = settings.dim
        self.frame_cnn = ImageCNN(3, state.size, dim, settings.dropout)
        self.time = nn.Parameter(torch.randn(1, state.frames, dim) * 0.02)
        self.temporal = transformer(
            dim, max(1, settings.layers // 2), settings.heads, settings.dropout
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, values: torch.Tensor, present: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> EncodedInput:
        batch, frames = values.shape[:2]
        per_frame = self.frame_cnn(values.flatten(0, 1)).mean(dim=1)
        tokens = per_frame.view(batch, frames, -1) + self.time[:, :frames]
        mask = present[:, None].expand(-1, frames)
        if lengths is not None:
            mask = mask & lengths_mask(lengths.to(values.device), frames)
        return EncodedInput(self.norm(run_transformer(self.temporal, tokens, mask)), mask)


ENCODERS.register("pretrained_video", modality="video", pretrained=True)(PretrainedEncoder)
