"""A small U-Net that predicts a velocity field over an image, conditioned on a time in [0, 1],
on a condition vector and on condition tokens it cross-attends to.

Two resolutions (full and half), GroupNorm residual blocks that add the time embedding plus the
condition vector (the fused inputs pooled to one vector: what every pixel should know, such as
which digit to draw, reaches every block at once, as the pooled text embedding does in Imagen
and SDXL), and a cross-attention block after each: every pixel attends to the condition tokens
(the fused token memory of the inputs, after a learned null token), masked tokens unread. Written out by hand,
as nanoGPT writes its model, so the forward pass reads top to bottom.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


def time_features(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features of times t [batch] in [0, 1] → [batch, dim]."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = 1000.0 * t.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResidualBlock(nn.Module):
    def __init__(self, channels_in: int, channels: int, time_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels, 3, padding=1)
        self.time = nn.Linear(time_dim, channels)
        self.norm2 = group_norm(channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.skip = nn.Conv2d(channels_in, channels, 1) if channels_in != channels else None

    def forward(self, x: Tensor, time: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(time)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + (x if self.skip is None else self.skip(x))


class CrossAttention(nn.Module):
    """Pixels (queries) attend to condition tokens (keys, values); the output projection
    starts at zero, so an untrained block passes its input through unchanged."""

    def __init__(self, channels: int, memory_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels)
        self.query = nn.Linear(channels, channels)
        self.key_value = nn.Linear(memory_dim, 2 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, memory: Tensor, mask: Tensor) -> Tensor:
        """x [b, c, h, w]; memory [b, m, memory_dim]; mask [b, m], at least one True a row."""
        b, c, height, width = x.shape
        query = self.query(self.norm(x).flatten(2).transpose(1, 2))  # [b, h*w, c]
        key, value = self.key_value(memory.to(query.dtype)).chunk(2, dim=-1)
        query, key, value = (
            t.view(b, -1, self.heads, c // self.heads).transpose(1, 2) for t in (query, key, value)
        )
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask[:, None, None])
        attended = attended.transpose(1, 2).reshape(b, height * width, c)
        return x + self.out(attended).transpose(1, 2).reshape(b, c, height, width)


class UNet(nn.Module):
    """(noisy image [b, C, S, S], time [b], condition vector, condition tokens and mask) →
    velocity, same shape."""

    def __init__(
        self, channels: int, width: int, memory_dim: int, heads: int, dropout: float
    ) -> None:
        super().__init__()
        wide, time_dim = 2 * width, 4 * width
        self.width, self.time_dim = width, time_dim
        self.time = nn.Sequential(
            nn.Linear(width, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.down1 = ResidualBlock(width, width, time_dim, dropout)
        self.attend1 = CrossAttention(width, memory_dim, heads)
        self.downsample = nn.Conv2d(width, wide, 3, stride=2, padding=1)
        self.down2 = ResidualBlock(wide, wide, time_dim, dropout)
        self.attend2 = CrossAttention(wide, memory_dim, heads)
        self.middle = ResidualBlock(wide, wide, time_dim, dropout)
        self.attend_middle = CrossAttention(wide, memory_dim, heads)
        self.up2 = ResidualBlock(2 * wide, wide, time_dim, dropout)
        self.attend_up2 = CrossAttention(wide, memory_dim, heads)
        self.upsample = nn.Conv2d(wide, width, 3, padding=1)
        self.up1 = ResidualBlock(2 * width, width, time_dim, dropout)
        self.attend_up1 = CrossAttention(width, memory_dim, heads)
        self.out = nn.Sequential(
            group_norm(width), nn.SiLU(), nn.Conv2d(width, channels, 3, padding=1)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(
        self, x: Tensor, t: Tensor, condition: Tensor, memory: Tensor, mask: Tensor
    ) -> Tensor:
        """condition: [b, time_dim], added to the time embedding."""
        time = self.time(time_features(t, self.width)) + condition.to(x.dtype)
        full = self.attend1(self.down1(self.stem(x), time), memory, mask)
        half = self.attend2(self.down2(self.downsample(full), time), memory, mask)
        h = self.attend_middle(self.middle(half, time), memory, mask)
        h = self.attend_up2(self.up2(torch.cat([h, half], dim=1), time), memory, mask)
        h = self.upsample(F.interpolate(h, size=full.shape[-2:], mode="nearest"))
        h = self.attend_up1(self.up1(torch.cat([h, full], dim=1), time), memory, mask)
        return self.out(h)
