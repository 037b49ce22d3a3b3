"""JSON summaries of attributions: where the attribution mass lies in each input."""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer

from polymodal.explain.attributions import InputAttribution
from polymodal.model import Model


def shares(weights: np.ndarray) -> list[float]:
    total = float(weights.sum())
    return [round(float(w) / total, 5) if total > 0 else 0.0 for w in weights]


def valid_steps(item: InputAttribution) -> int:
    """Frames (audio) or tokens (text) that hold data rather than padding."""
    return item.length if item.length else item.values.shape[-1]


def summarise(model: Model, item: InputAttribution) -> dict:
    """A JSON summary: where the attribution mass lies (shares of sum |attribution|)."""
    scores = item.attributions
    if item.kind == "image":
        mass = np.abs(scores).sum(axis=0)
        side = mass.shape[0] // 4 or 1
        grid = mass[: side * 4, : side * 4].reshape(4, side, 4, side).sum(axis=(1, 3))
        return {"mass_4x4": np.asarray(shares(grid.reshape(-1))).reshape(4, 4).tolist()}
    if item.kind == "audio" and scores.ndim == 1:  # a waveform: shares of 20 equal stretches
        used = np.abs(scores[: valid_steps(item)])
        return {"time_share": shares(np.array([s.sum() for s in np.array_split(used, 20)]))}
    if item.kind == "audio":
        used = np.abs(scores[:, : valid_steps(item)])
        return {"frame_share": shares(used.sum(axis=0)), "mel_share": shares(used.sum(axis=1))}
    if item.kind == "video":
        return {"frame_share": shares(np.abs(scores).reshape(scores.shape[0], -1).sum(axis=1))}
    if item.kind == "text":
        count = valid_steps(item)
        state = model.schema_.input(item.input)
        tokenizer = Tokenizer.from_str(state.tokenizer)
        ids = item.values[:count].astype(int)
        return {
            "tokens": [tokenizer.id_to_token(int(i)) or "?" for i in ids],
            "scores": [round(float(s), 6) for s in scores[:count]],
        }
    return {"attribution": float(np.sum(scores))}
