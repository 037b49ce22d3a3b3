"""A small CNN; its last feature map, pooled to 4×4, becomes 16 tokens with 2-D positions."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.config import ModelSettings
from polymodal.encoders.base import ENCODERS, EncodedInput, small_cnn
from polymodal.encoders.pretrained import PretrainedEncoder
from polymodal.modalities.image.preprocess import ImageState

GRID = 4


class ImageCNN(nn.Module):
    """[batch, channels, H, W] → [batch, 16, dim]."""

    def __init__(self, channels: int, size: int, dim: int, dropout: float) -> None:
        super().__init__()
        # Halve at once, for speed, unless the last map would then be smaller than the grid.
        first_stride = 2 if -(-size // 8) >= GRID else 1
        self.features = nn.Sequential(
            small_cnn(channels, dim, first_stride, size, size), nn.AdaptiveAvgPool2d(GRID)
        )
        self.position = nn.Parameter(torch.randn(1, GRID * GRID, dim) * 0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grid = self.features(images.float())
        tokens = grid.flatten(2).transpose(1, 2)
        return self.dropout(tokens + self.position)


@ENCODERS.register("image_cnn", modality="image", default=True)
class ImageEncoder(nn.Module):
    def __init__(self, state: ImageState, settings: ModelSettings) -> None:
        super().__init__()
        self.cnn = ImageCNN(state.channels, state.size, settings.dim, settings.dropout)
        self.norm = nn.LayerNorm(settings.dim)

    def forward(
        self, values: torch.Tensor, present: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> EncodedInput:
        tokens = self.norm(self.cnn(values))
        mask = present[:, None].expand(-1, tokens.shape[1])
        return EncodedInput(tokens, mask)


ENCODERS.register("pretrained_image", modality="image", pretrained=True)(PretrainedEncoder)
