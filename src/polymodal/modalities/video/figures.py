"""Video attributions: each sampled frame with its share of the attribution mass."""

from __future__ import annotations

from typing import Any

import numpy as np

from polymodal.modalities.common import pyplot, shares


def video_figure(state: Any, item: Any) -> Any:
    plt = pyplot()
    frames = item.values.shape[0]
    share = shares(np.abs(item.attributions).reshape(frames, -1).sum(axis=1))
    fig, axes = plt.subplots(2, frames, figsize=(1.3 * frames, 3), squeeze=False)
    mean = np.asarray(state.mean)[:, None, None]
    std = np.asarray(state.std)[:, None, None]
    pixels = np.clip(item.values * std + mean, 0, 1).transpose(0, 2, 3, 1)
    for index in range(frames):
        axes[0, index].imshow(pixels[index])
        axes[0, index].axis("off")
        axes[0, index].set_title(f"{share[index]:.0%}", fontsize=8)
    for axis in axes[1]:
        axis.remove()
    bar = fig.add_subplot(2, 1, 2)
    bar.bar(range(frames), share, color="#2f6db5")
    bar.set_xlabel("frame")
    bar.set_ylabel("share of |attribution|")
    fig.suptitle(item.input, fontsize=10)
    return fig
