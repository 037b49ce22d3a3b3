"""Noise sweeps: each input corrupted at growing strength, in the units a user would use.

Images and video get Gaussian pixel noise (σ on the 0–1 pixel scale) and Gaussian blur (σ
in pixels). Audio gets white noise at a signal-to-noise ratio, added to the *waveform*,
which is then turned into a log-mel spectrogram again, so the noise goes through the same
preprocessing as a real recording would. Text gets word dropout and character typos on the
raw text, re-tokenised. Numbers get Gaussian jitter in standard deviations; categories are
swapped for random other values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from polymodal.data.audio import (
    AudioState,
    decode_waveform,
    log_mel,
    pad_last_axis,
    pretrained_audio_features,
)
from polymodal.data.column import is_missing
from polymodal.data.files import resolve_path
from polymodal.data.pretrained import load_feature_extractor
from polymodal.data.problems import ProblemLog
from polymodal.data.table import Table
from polymodal.data.text import encode_text
from polymodal.explain.scoring import Features
from polymodal.model import Model

Perturb = Callable[[float, np.random.Generator], dict]
LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


@dataclass
class Sweep:
    input: str
    perturbation: str
    unit: str
    levels: list[float]  # from mild to strong; the clean score is kept apart
    apply: Perturb  # (level, rng) → the input's new feature item


def sweeps_for(model: Model, table: Table, features: Features, name: str) -> list[Sweep]:
    """The sweeps that make sense for one input's kind."""
    kind = model.net_.input_kinds[name]
    item = features[name]
    values = item["values"].float()
    if kind in ("image", "video"):
        scale = torch.tensor(model.schema_.input(name).std)[:, None, None]
        axes = (2, 3) if kind == "image" else (3, 4)
        return [
            Sweep(name, "gaussian noise", "σ (0–1 pixel scale)", [0.05, 0.1, 0.2, 0.4, 0.8],
                  lambda s, rng: {"values": values + gaussian(values, s, rng) / scale}),
            Sweep(name, "blur", "σ (pixels)", [0.5, 1.0, 2.0, 4.0],
                  lambda s, rng: {"values": blur(values, s, axes)}),
        ]  # fmt: skip
    if kind == "audio":
        waves = waveforms(model, table, name)
        return [
            Sweep(name, "white noise", "SNR (dB)", [20, 10, 5, 0, -5, -10],
                  lambda snr, rng: noisy_spectrograms(model, name, waves, snr, rng)),
        ]  # fmt: skip
    if kind == "text":
        cells = table.frame[model.schema_.input(name).source].tolist()
        return [
            Sweep(name, "word dropout", "fraction of words", [0.1, 0.2, 0.4, 0.6, 0.8],
                  lambda p, rng: retokenised(model, name, [drop_words(c, p, rng) for c in cells])),
            Sweep(name, "typos", "fraction of letters", [0.02, 0.05, 0.1, 0.2, 0.4],
                  lambda p, rng: retokenised(model, name, [typos(c, p, rng) for c in cells])),
        ]  # fmt: skip
    if kind == "number":
        return [
            Sweep(name, "gaussian jitter", "σ (standard deviations)", [0.1, 0.25, 0.5, 1.0, 2.0],
                  lambda s, rng: {"values": values + gaussian(values, s, rng)}),
        ]  # fmt: skip
    vocabulary = len(model.schema_.input(name).vocabulary)
    return [
        Sweep(name, "random swap", "fraction of rows", [0.1, 0.25, 0.5, 1.0],
              lambda p, rng: {"values": swap(item["values"], p, vocabulary, rng)}),
    ]  # fmt: skip


def gaussian(values: torch.Tensor, sigma: float, rng: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy(rng.normal(0.0, sigma, values.shape).astype(np.float32))


def blur(values: torch.Tensor, sigma: float, axes: tuple[int, ...]) -> torch.Tensor:
    """Gaussian blur over the spatial axes (linear, so blurring normalised pixels is exact)."""
    sigmas = [sigma if axis in axes else 0.0 for axis in range(values.ndim)]
    return torch.from_numpy(gaussian_filter(values.numpy(), sigmas, mode="nearest"))


def swap(values: torch.Tensor, p: float, size: int, rng: np.random.Generator) -> torch.Tensor:
    hit = torch.from_numpy(rng.random(len(values)) < p) & (values >= 2)
    others = torch.from_numpy(rng.integers(2, 2 + max(size, 1), len(values)))
    return torch.where(hit, others, values)


def waveforms(model: Model, table: Table, name: str) -> list[np.ndarray | None]:
    """Each row's waveform, decoded once for the whole sweep (None where absent or bad)."""
    state = model.schema_.input(name)
    waves = []
    for cell in table.frame[state.source].tolist():
        wave = None
        if not is_missing(cell):
            try:
                data = resolve_path(cell, table.base_dir).read_bytes()
                wave = decode_waveform(data, state.settings.sample_rate)
            except (OSError, ValueError):  # DecodeError is a ValueError
                wave = None
        waves.append(wave)
    return waves


def noisy_spectrograms(
    model: Model, name: str, waves: list, snr_db: float, rng: np.random.Generator
) -> dict:
    """White noise at `snr_db` added to each waveform, then log-mel, crop and normalise as
    `polymodal.data.audio.encode_audio` does."""
    state = model.schema_.input(name)
    if state.pretrained:
        return noisy_extracted(state, waves, snr_db, rng)
    values = np.zeros((len(waves), state.settings.n_mels, state.frames), dtype=np.float32)
    lengths = np.zeros(len(waves), dtype=np.int64)
    for index, wave in enumerate(waves):
        if wave is None:
            continue
        mel = log_mel(with_noise(wave, snr_db, rng), state.settings)[:, : state.frames]
        values[index, :, : mel.shape[1]] = (mel - state.mean) / state.std
        lengths[index] = mel.shape[1]
    return {"values": torch.from_numpy(values), "lengths": torch.from_numpy(lengths)}


def noisy_extracted(
    state: AudioState, waves: list, snr_db: float, rng: np.random.Generator
) -> dict:
    """The same noise, featurised by the pretrained encoder's feature extractor."""
    extractor = load_feature_extractor(state.pretrained)
    arrays = [
        None
        if wave is None
        else pretrained_audio_features(extractor, state, with_noise(wave, snr_db, rng))
        for wave in waves
    ]
    column = pad_last_axis(arrays, state.frames)
    return {"values": torch.from_numpy(column.values), "lengths": torch.from_numpy(column.lengths)}


def with_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    power = max(float(np.mean(wave**2)), 1e-12)
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), wave.shape)
    return (wave + noise).astype(np.float32)


def drop_words(cell: object, p: float, rng: np.random.Generator) -> object:
    if is_missing(cell):
        return cell
    words = str(cell).split()
    return " ".join(w for w in words if rng.random() >= p)


def typos(cell: object, p: float, rng: np.random.Generator) -> object:
    """Each letter replaced by a random one with probability p."""
    if is_missing(cell):
        return cell
    chars = np.array(list(str(cell)))
    if chars.size == 0:
        return cell
    hit = (rng.random(chars.size) < p) & np.char.isalpha(chars)
    chars[hit] = rng.choice(LETTERS, int(hit.sum()))
    return "".join(chars.tolist())


def retokenised(model: Model, name: str, cells: list) -> dict:
    """Edited text through the model's own tokenizer; a row left empty becomes absent."""
    column = encode_text(model.schema_.input(name), cells, ProblemLog())
    return {
        "values": torch.from_numpy(column.values),
        "present": torch.from_numpy(column.present),
        "lengths": torch.from_numpy(column.lengths),
    }
