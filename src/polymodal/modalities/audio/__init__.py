"""Audio: soundfile / PyAV decoding to log-mel spectrograms (or a pretrained extractor's
features), a CNN over time, SpecAugment, white noise at an SNR, spectrogram attributions, and
a file upload with the microphone on the page."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from polymodal.modalities.audio import encoder  # noqa: F401  (registers the encoders)
from polymodal.modalities.audio.augment import augment_spectrograms
from polymodal.modalities.audio.noise import noisy_spectrograms, waveforms
from polymodal.modalities.audio.preprocess import AudioState, encode_audio, fit_audio
from polymodal.modalities.audio.pretrained import audio_tokens
from polymodal.modalities.base import EncodeContext, FitContext, Modality, Sweep, Widget, register
from polymodal.modalities.common import shares, valid_steps


@register
class Audio(Modality):
    name = "audio"
    state = AudioState
    files = continuous = pretrained = True
    rank = 2
    formats = ("WAV", "FLAC", "OGG", "MP3", "M4A", "sound track of MP4/WebM/MKV")
    sniffed = frozenset({"audio", "video"})
    widget = Widget(
        "file", accept="audio/*,video/webm,video/mp4", capture="microphone", preview="audio"
    )
    query = "audio"

    def fit(self, cells: list, column: str, source: str, context: FitContext) -> AudioState:
        settings = context.settings.audio
        return fit_audio(
            cells, column, context.base_dir, settings, source, context.pretrained,
            whole=context.whole_clips,
        )  # fmt: skip

    def encode(self, state: AudioState, cells: list, context: EncodeContext) -> Any:
        c = context
        return encode_audio(state, cells, c.base_dir, c.log, c.cache, c.row_ids)

    def augment(self, values: torch.Tensor) -> torch.Tensor:
        """Spectrograms only: a pretrained encoder's waveforms stay as they are."""
        return augment_spectrograms(values) if values.dim() == 3 else values

    def sweeps(self, state: AudioState, item: dict, cells: list, base_dir: Any) -> list[Sweep]:
        waves = waveforms(state, cells, base_dir)
        return [
            Sweep(state.column, "white noise", "SNR (dB)", [20, 10, 5, 0, -5, -10],
                  lambda snr, rng: noisy_spectrograms(state, waves, snr, rng)),
        ]  # fmt: skip

    def summarise(self, state: AudioState, item: Any) -> dict:
        """Shares over frames and mel bands; over 20 equal stretches of a waveform."""
        scores = item.attributions
        if scores.ndim == 1:
            used = np.abs(scores[: valid_steps(item)])
            return {"time_share": shares(np.array([s.sum() for s in np.array_split(used, 20)]))}
        used = np.abs(scores[:, : valid_steps(item)])
        return {"frame_share": shares(used.sum(axis=0)), "mel_share": shares(used.sum(axis=1))}

    def figure(self, state: AudioState, item: Any) -> Any:
        from polymodal.modalities.audio.figures import audio_figure, waveform_figure

        if item.values.ndim == 1:  # a pretrained encoder's waveform
            return waveform_figure(item, valid_steps(item))
        return audio_figure(item, valid_steps(item))

    def backbone_tokens(
        self, backbone: Any, pretrained: Any, values: torch.Tensor, lengths: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return audio_tokens(backbone, pretrained, values.float(), lengths)
