"""Image attributions: the input, the map of |attribution|, and the two overlaid."""

from __future__ import annotations

from typing import Any

import numpy as np

from polymodal.modalities.common import pyplot


def image_pixels(state: Any, values: np.ndarray) -> np.ndarray:
    """Normalised features back to [0, 1] pixels, [H, W] or [H, W, 3]."""
    mean = np.asarray(state.mean)[:, None, None]
    std = np.asarray(state.std)[:, None, None]
    pixels = np.clip(values * std + mean, 0, 1)
    return pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)


def image_figure(state: Any, item: Any) -> Any:
    """The input, the map of |attribution| summed over channels, and the two overlaid."""
    plt = pyplot()
    pixels = image_pixels(state, item.values)
    mass = np.abs(item.attributions).sum(axis=0)
    grey = pixels if pixels.ndim == 2 else pixels.mean(axis=2)
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.7))
    axes[0].imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=1)
    axes[0].set_title("input", fontsize=9)
    shown = axes[1].imshow(mass, cmap="inferno")
    axes[1].set_title("|attribution|", fontsize=9)
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    axes[2].imshow(grey, cmap="gray", vmin=0, vmax=1)
    axes[2].imshow(mass, cmap="inferno", alpha=0.55)
    axes[2].set_title("overlay", fontsize=9)
    for axis in axes:
        axis.axis("off")
    fig.suptitle(item.input, fontsize=10)
    return fig
