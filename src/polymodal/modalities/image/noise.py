"""Pixel noise for robustness curves and adversarial ε, in 0–1 pixel units (images, video)."""

from __future__ import annotations

import torch
from scipy.ndimage import gaussian_filter

from polymodal.modalities.base import Sweep
from polymodal.modalities.common import gaussian

PIXEL_EPSILONS = [1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255]
PIXEL_UNIT = "ε (0–1 pixel scale, L∞)"


def pixel_scale(std: list[float]) -> torch.Tensor:
    """Normalised feature units in one pixel unit: 1 / the channel std, [channels, 1, 1]."""
    return 1 / torch.tensor(std)[:, None, None]


def pixel_sweeps(name: str, std: list[float], values: torch.Tensor, axes: tuple) -> list[Sweep]:
    """Gaussian pixel noise (σ on the 0–1 scale) and Gaussian blur (σ in pixels) over `axes`."""
    scale = torch.tensor(std)[:, None, None]
    return [
        Sweep(name, "gaussian noise", "σ (0–1 pixel scale)", [0.05, 0.1, 0.2, 0.4, 0.8],
              lambda s, rng: {"values": values + gaussian(values, s, rng) / scale}),
        Sweep(name, "blur", "σ (pixels)", [0.5, 1.0, 2.0, 4.0],
              lambda s, rng: {"values": blur(values, s, axes)}),
    ]  # fmt: skip


def blur(values: torch.Tensor, sigma: float, axes: tuple[int, ...]) -> torch.Tensor:
    """Gaussian blur over the spatial axes (linear, so blurring normalised pixels is exact)."""
    sigmas = [sigma if axis in axes else 0.0 for axis in range(values.ndim)]
    return torch.from_numpy(gaussian_filter(values.numpy(), sigmas, mode="nearest"))
