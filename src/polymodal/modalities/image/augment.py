"""Random translations of training images (and of video frames)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

MAX_SHIFT = 0.05  # fraction of the image side


def augment_images(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """[batch, channels, H, W]: a random translation per image (borders repeat)."""
    batch = images.shape[0]
    shift = (torch.rand(batch, 2, generator=generator) * 2 - 1) * MAX_SHIFT * 2  # grid is [-1, 1]
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    theta = theta.to(images.device)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images.float(), grid, padding_mode="border", align_corners=False)
