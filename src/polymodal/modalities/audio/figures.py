"""Audio attributions: over the log-mel spectrogram, or along a pretrained model's waveform."""

from __future__ import annotations

from typing import Any

import numpy as np

from polymodal.modalities.common import pyplot


def audio_figure(item: Any, frames: int) -> Any:
    plt = pyplot()
    scores = item.attributions[:, :frames]
    limit = float(np.abs(scores).max()) or 1.0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 4), sharex=True)
    top.imshow(item.values[:, :frames], origin="lower", aspect="auto", cmap="magma")
    top.set_title(f"{item.input}: log-mel spectrogram", fontsize=9)
    shown = bottom.imshow(
        scores, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit
    )
    bottom.set_title("attribution (red: towards the predicted class)", fontsize=9)
    bottom.set_xlabel("frame")
    for axis in (top, bottom):
        axis.set_ylabel("mel band")
    fig.colorbar(shown, ax=bottom, fraction=0.03)
    return fig


def waveform_figure(item: Any, samples: int) -> Any:
    """The waveform and |attribution| summed over 100 equal stretches of it."""
    plt = pyplot()
    wave, scores = item.values[:samples], np.abs(item.attributions[:samples])
    stretches = np.array_split(scores, min(100, max(1, samples)))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 3.5))
    top.plot(wave, linewidth=0.4, color="#333333")
    top.set_title(f"{item.input}: waveform (as the feature extractor gives it)", fontsize=9)
    bottom.bar(range(len(stretches)), [float(s.sum()) for s in stretches], color="#c0392b")
    bottom.set_xlabel("time (hundredths of the clip)")
    bottom.set_ylabel("|attribution|")
    return fig
