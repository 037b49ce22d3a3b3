"""Noise sweeps: each input corrupted at growing strength, in the units a user would use.

Each modality says which corruptions make sense for it (`Modality.sweeps`): pixel noise and
blur for images and video, white noise at an SNR added to the waveform for audio, word
dropout and typos for text, jitter for numbers, random swaps for categories.
"""

from __future__ import annotations

import numpy as np

from polymodal.data.table import Table
from polymodal.explain.scoring import Features
from polymodal.modalities import modality
from polymodal.modalities.audio import noise as audio_noise
from polymodal.modalities.base import Sweep
from polymodal.model import Model

__all__ = ["Sweep", "noisy_spectrograms", "sweeps_for", "waveforms"]


def sweeps_for(model: Model, table: Table, features: Features, name: str) -> list[Sweep]:
    """The sweeps that make sense for one input's kind."""
    state = model.schema_.input(name)
    cells = table.frame[state.source].tolist()
    return modality(state.kind).sweeps(state, features[name], cells, table.base_dir)


def waveforms(model: Model, table: Table, name: str) -> list[np.ndarray | None]:
    """An audio input's waveforms, decoded once for a whole sweep (None where absent or bad)."""
    state = model.schema_.input(name)
    return audio_noise.waveforms(state, table.frame[state.source].tolist(), table.base_dir)


def noisy_spectrograms(
    model: Model, name: str, waves: list, snr_db: float, rng: np.random.Generator
) -> dict:
    """An audio input's features with white noise at `snr_db` added to each waveform."""
    return audio_noise.noisy_spectrograms(model.schema_.input(name), waves, snr_db, rng)
