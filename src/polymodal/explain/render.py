"""Attributions as pictures and JSON: saliency overlays for images, maps over the
spectrogram for audio, per-frame bars for video, per-column bars for numbers and categories,
and highlighted tokens (HTML) for text."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from polymodal.explain.attributions import InputAttribution  # noqa: E402
from polymodal.explain.summaries import shares, valid_steps  # noqa: E402
from polymodal.model import Model  # noqa: E402

TABULAR = ("number", "category")


def png_bytes(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    """A self-contained <img>: the PNG inline as base64, so the page needs no other file."""
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def image_pixels(model: Model, item: InputAttribution) -> np.ndarray:
    """Normalised features back to [0, 1] pixels, [H, W] or [H, W, 3]."""
    state = model.schema_.input(item.input)
    mean = np.asarray(state.mean)[:, None, None]
    std = np.asarray(state.std)[:, None, None]
    pixels = np.clip(item.values * std + mean, 0, 1)
    return pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)


def token_html(summary: dict) -> str:
    """Tokens with a background colour: red pushes towards the predicted class, blue away."""
    scores = np.asarray(summary["scores"], dtype=float)
    top = float(np.abs(scores).max()) if scores.size else 0.0
    spans = []
    for token, value in zip(summary["tokens"], scores, strict=True):
        strength = abs(value) / top if top > 0 else 0.0
        colour = "220,60,40" if value >= 0 else "40,90,220"
        spans.append(
            f'<span title="{value:+.4f}" style="background:rgba({colour},{strength:.2f});'
            f'padding:1px 2px;margin:1px;border-radius:3px">{html.escape(token)}</span>'
        )
    return '<p class="tokens">' + " ".join(spans) + "</p>"


def figure(model: Model, item: InputAttribution) -> plt.Figure | None:
    """A picture of one input's attributions; None for text (HTML) and tabular (one chart)."""
    if item.kind == "image":
        return image_figure(model, item)
    if item.kind == "audio" and item.values.ndim == 1:  # a pretrained encoder's waveform
        return waveform_figure(item, valid_steps(item))
    if item.kind == "audio":
        return audio_figure(item, valid_steps(item))
    if item.kind == "video":
        return video_figure(model, item)
    return None


def image_figure(model: Model, item: InputAttribution) -> plt.Figure:
    """The input, the map of |attribution| summed over channels, and the two overlaid."""
    pixels = image_pixels(model, item)
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


def audio_figure(item: InputAttribution, frames: int) -> plt.Figure:
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


def waveform_figure(item: InputAttribution, samples: int) -> plt.Figure:
    """The waveform and |attribution| summed over 100 equal stretches of it."""
    wave, scores = item.values[:samples], np.abs(item.attributions[:samples])
    stretches = np.array_split(scores, min(100, max(1, samples)))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 3.5))
    top.plot(wave, linewidth=0.4, color="#333333")
    top.set_title(f"{item.input}: waveform (as the feature extractor gives it)", fontsize=9)
    bottom.bar(range(len(stretches)), [float(s.sum()) for s in stretches], color="#c0392b")
    bottom.set_xlabel("time (hundredths of the clip)")
    bottom.set_ylabel("|attribution|")
    return fig


def video_figure(model: Model, item: InputAttribution) -> plt.Figure:
    frames = item.values.shape[0]
    share = shares(np.abs(item.attributions).reshape(frames, -1).sum(axis=1))
    fig, axes = plt.subplots(2, frames, figsize=(1.3 * frames, 3), squeeze=False)
    state = model.schema_.input(item.input)
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


def tabular_figure(items: list[InputAttribution]) -> plt.Figure:
    """Number and category columns of one row in one chart, signed."""
    names = [item.input for item in items]
    values = [float(np.sum(item.attributions)) for item in items]
    fig, axis = plt.subplots(figsize=(5, 0.35 * len(items) + 1))
    axis.barh(names, values, color=["#c0392b" if v >= 0 else "#2f6db5" for v in values])
    axis.axvline(0, color="black", linewidth=0.5)
    axis.invert_yaxis()
    axis.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
    axis.set_xlabel("attribution (red: towards the predicted class)")
    return fig
