"""Video attributions: each sampled frame with its share of the attribution mass."""

from __future__ import annotations

from typing import Any

import numpy as np

from polymodal.modalities.common import pyplot, shares

MAX_THUMBNAILS = 16  # a long clip read at `fps` shows this many frames, spread evenly


def video_figure(state: Any, item: Any) -> Any:
    plt = pyplot()
    frames = item.length if item.length else item.values.shape[0]  # padding left out
    share = shares(np.abs(item.attributions[:frames]).reshape(frames, -1).sum(axis=1))
    shown = np.unique(np.linspace(0, frames - 1, min(frames, MAX_THUMBNAILS)).round().astype(int))
    fig, axes = plt.subplots(2, len(shown), figsize=(1.3 * len(shown), 3), squeeze=False)
    mean = np.asarray(state.mean)[:, None, None]
    std = np.asarray(state.std)[:, None, None]
    pixels = np.clip(item.values[:frames] * std + mean, 0, 1).transpose(0, 2, 3, 1)
    for column, index in enumerate(shown):
        axes[0, column].imshow(pixels[index])
        axes[0, column].axis("off")
        axes[0, column].set_title(f"{share[index]:.0%}", fontsize=8)
    for axis in axes[1]:
        axis.remove()
    bar = fig.add_subplot(2, 1, 2)
    bar.bar(range(frames), share, color="#2f6db5")
    fps = getattr(state, "fps", None)
    bar.set_xlabel(f"frame ({fps:g} per second)" if fps else "frame")
    bar.set_ylabel("share of |attribution|")
    fig.suptitle(item.input, fontsize=10)
    return fig
