"""White noise at a signal-to-noise ratio, added to the *waveform*, which then goes through
the same preprocessing as a real recording (log-mel, or the pretrained feature extractor)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from polymodal.data.column import is_missing
from polymodal.data.files import resolve_path
from polymodal.modalities.audio.preprocess import (
    AudioState,
    decode_waveform,
    log_mel,
    pad_last_axis,
    pretrained_audio_features,
)
from polymodal.modalities.audio.pretrained import load_feature_extractor


def waveforms(state: AudioState, cells: list, base_dir: Path) -> list[np.ndarray | None]:
    """Each row's waveform, decoded once for the whole sweep (None where absent or bad)."""
    waves = []
    for cell in cells:
        wave = None
        if not is_missing(cell):
            try:
                data = resolve_path(cell, base_dir).read_bytes()
                wave = decode_waveform(data, state.settings.sample_rate)
            except (OSError, ValueError):  # DecodeError is a ValueError
                wave = None
        waves.append(wave)
    return waves


def noisy_spectrograms(
    state: AudioState, waves: list, snr_db: float, rng: np.random.Generator
) -> dict:
    """White noise at `snr_db` added to each waveform, then log-mel, crop and normalise as
    `encode_audio` does."""
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
