"""Attributions as pictures: each modality draws its own (saliency overlays for images, maps
over the spectrogram for audio, per-frame bars for video); here, what they share: PNG and
inline-image helpers, per-column bars for tabular inputs and highlighted tokens (HTML)."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from polymodal.explain.attributions import InputAttribution  # noqa: E402
from polymodal.modalities import modality  # noqa: E402
from polymodal.model import Model  # noqa: E402


def png_bytes(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    """A self-contained <img>: the PNG inline as base64, so the page needs no other file."""
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


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
    """A picture of one input's attributions, drawn by its modality; None for text (HTML)
    and tabular inputs (one chart for all of them)."""
    return modality(item.kind).figure(model.schema_.input(item.input), item)


def is_tabular(item: InputAttribution) -> bool:
    """Numbers and categories: one value per row, drawn together in one chart."""
    return modality(item.kind).tabular


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
