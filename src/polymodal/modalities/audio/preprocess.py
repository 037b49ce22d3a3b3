"""Audio: decode (soundfile, PyAV for compressed or video containers), resample, log-mel."""

from __future__ import annotations

import io
from functools import lru_cache
from math import gcd
from pathlib import Path
from typing import Literal

import av
import numpy as np
import soundfile
import torch
from pydantic import BaseModel
from scipy.signal import firwin, resample_poly

from polymodal.config import AudioSettings
from polymodal.data.cache import FeatureCache
from polymodal.data.column import FeatureColumn, is_missing, normalised_float16
from polymodal.data.files import decode_file_column, one_torch_thread, resolve_path
from polymodal.data.pretrained import PretrainedState
from polymodal.data.problems import DecodeError, ProblemLog
from polymodal.modalities.audio.pretrained import (
    extract_audio_features,
    fit_feature_extractor,
    load_feature_extractor,
)
from polymodal.modalities.common import crop_length

FIT_SAMPLE = 128
MAX_SECONDS = 30.0


class AudioState(BaseModel):
    kind: Literal["audio"] = "audio"
    column: str
    source: str
    settings: AudioSettings
    frames: int  # spectrogram frames kept; for a pretrained encoder, waveform samples
    mean: float
    std: float
    pretrained: PretrainedState | None = None


def decode_waveform(data: bytes, sample_rate: int) -> np.ndarray:
    """Any soundfile- or FFmpeg-readable bytes → mono float32 at `sample_rate`."""
    try:
        wave, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        wave = wave.mean(axis=1)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        wave, rate = decode_with_pyav(data, sample_rate), sample_rate
    if wave.size == 0:
        raise DecodeError("audio has no samples")
    if not np.all(np.isfinite(wave)):
        raise DecodeError("audio holds NaN or infinite samples")
    return resample(wave, rate, sample_rate)


def decode_with_pyav(data: bytes, sample_rate: int) -> np.ndarray:
    """The first audio stream of any container FFmpeg reads (mp3, m4a, mp4, webm, ...)."""
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.audio:
                raise DecodeError("no audio stream in file")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks = []
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except DecodeError:
        raise
    except (av.FFmpegError, ValueError, IndexError) as error:
        raise DecodeError(f"not a readable audio file ({type(error).__name__})") from None
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return wave.astype(np.float32)
    divisor = gcd(rate, target)
    up, down = target // divisor, rate // divisor
    return resample_poly(wave, up, down, window=resampling_filter(up, down)).astype(np.float32)


@lru_cache(maxsize=8)
def resampling_filter(up: int, down: int) -> np.ndarray:
    """The low-pass filter `resample_poly` designs by default for float32 input (a Kaiser
    window, beta 5, cut at the lower Nyquist rate, 10 periods each side), designed once per
    pair of rates instead of once per file: for AV-MNIST's short 8 kHz recordings, designing
    it took twice as long as filtering with it (profiled)."""
    max_rate = max(up, down)
    return firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """Triangular filters on the HTK mel scale, [n_mels, n_fft // 2 + 1]."""

    def to_mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    def to_hz(mel: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (mel / 2595.0) - 1.0)

    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = to_hz(np.linspace(to_mel(np.array(0.0)), to_mel(np.array(sample_rate / 2)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - bins[None]) / np.maximum(upper - centre, 1e-9)
    return torch.from_numpy(np.clip(np.minimum(rising, falling), 0, None).astype(np.float32))


def log_mel(wave: np.ndarray, settings: AudioSettings) -> np.ndarray:
    """Waveform → log-mel power spectrogram [n_mels, frames]."""
    signal = torch.from_numpy(wave)
    if signal.numel() < settings.n_fft:
        signal = torch.nn.functional.pad(signal, (0, settings.n_fft - signal.numel()))
    spectrum = torch.stft(
        signal,
        n_fft=settings.n_fft,
        hop_length=settings.hop_length,
        window=torch.hann_window(settings.n_fft),
        return_complex=True,
    )
    power = spectrum.abs() ** 2
    mel = mel_filterbank(settings.sample_rate, settings.n_fft, settings.n_mels) @ power
    return torch.log(mel + 1e-6).numpy()


def decode_log_mel(data: bytes, settings: AudioSettings) -> np.ndarray:
    return log_mel(decode_waveform(data, settings.sample_rate), settings).astype(np.float16)


def fit_audio(
    cells: list[object],
    column: str,
    base_dir: Path,
    settings: AudioSettings,
    source: str,
    pretrained: PretrainedState | None = None,
    whole: bool = False,
) -> AudioState:
    """Crop length (`crop_length` of a sample: whole clips for a transcript) and
    normalisation stats."""
    paths = [resolve_path(cell, base_dir) for cell in cells if not is_missing(cell)]
    if pretrained:
        return fit_pretrained_audio(paths, column, settings, source, pretrained, whole)
    step = max(1, len(paths) // FIT_SAMPLE)
    features = []
    with one_torch_thread():
        for path in paths[::step][:FIT_SAMPLE]:
            try:
                features.append(decode_log_mel(path.read_bytes(), settings))
            except (OSError, DecodeError):
                continue
    frames_per_second = settings.sample_rate / settings.hop_length
    if settings.max_seconds:
        frames = int(settings.max_seconds * frames_per_second)
    elif features:
        frames = int(crop_length([f.shape[1] for f in features], whole))
    else:
        frames = int(5 * frames_per_second)
    frames = int(min(max(frames, 8), MAX_SECONDS * frames_per_second))
    values = (
        np.concatenate([f.reshape(-1) for f in features]).astype(np.float32)
        if features
        else np.zeros(1)
    )
    return AudioState(
        column=column,
        source=source,
        settings=settings,
        frames=frames,
        mean=float(values.mean()),
        std=float(max(values.std(), 1e-3)),
    )


def encode_audio(
    state: AudioState,
    cells: list[object],
    base_dir: Path,
    log: ProblemLog,
    cache: FeatureCache,
    row_ids: list[int] | None = None,
) -> FeatureColumn:
    if state.pretrained:
        return encode_pretrained_audio(state, cells, base_dir, log, cache, row_ids)
    settings = {"kind": "audio", **state.settings.model_dump(exclude={"max_seconds"}), "v": 1}
    arrays = decode_file_column(
        cells,
        column=state.column,
        base_dir=base_dir,
        decode=lambda _path, data: decode_log_mel(data, state.settings),
        settings=settings,
        log=log,
        cache=cache,
        row_ids=row_ids,
    )
    raw = np.zeros((len(arrays), state.settings.n_mels, state.frames), dtype=np.float16)
    lengths = np.zeros(len(arrays), dtype=np.int64)
    for index, array in enumerate(arrays):
        if array is not None:
            lengths[index] = steps = min(array.shape[1], state.frames)
            raw[index, :, :steps] = array[:, :steps]
    real = np.arange(state.frames)[None, None, :] < lengths[:, None, None]  # padding stays 0
    values = normalised_float16(raw, state.mean, state.std, real)
    return FeatureColumn(values, lengths > 0, lengths)


def fit_pretrained_audio(
    paths: list[Path],
    column: str,
    settings: AudioSettings,
    source: str,
    pretrained: PretrainedState,
    whole: bool = False,
) -> AudioState:
    """The extractor's sample rate; waveforms cropped at `crop_length` of a sample's lengths
    (or `max_seconds`). The extractor normalises, so mean 0 and std 1 here."""
    pretrained = fit_feature_extractor(pretrained)
    rate = int(pretrained.feature_extractor.get("sampling_rate", settings.sample_rate))
    settings = settings.model_copy(update={"sample_rate": rate})
    lengths = []
    for path in paths[:: max(1, len(paths) // FIT_SAMPLE)][:FIT_SAMPLE]:
        try:
            lengths.append(decode_waveform(path.read_bytes(), rate).size)
        except (OSError, DecodeError):
            continue
    if settings.max_seconds:
        samples = int(settings.max_seconds * rate)
    else:
        samples = int(crop_length(lengths, whole)) if lengths else 5 * rate
    samples = int(min(max(samples, rate // 10), MAX_SECONDS * rate))
    return AudioState(
        column=column, source=source, settings=settings, frames=samples, mean=0.0, std=1.0,
        pretrained=pretrained,
    )  # fmt: skip


def encode_pretrained_audio(
    state: AudioState,
    cells: list[object],
    base_dir: Path,
    log: ProblemLog,
    cache: FeatureCache,
    row_ids: list[int] | None = None,
) -> FeatureColumn:
    """The pretrained feature extractor's arrays (cached like spectrograms), padded."""
    extractor = load_feature_extractor(state.pretrained)
    settings = {
        "kind": "audio",
        "extractor": state.pretrained.feature_extractor,
        "samples": state.frames,
    }
    arrays = decode_file_column(
        cells, column=state.column, base_dir=base_dir, settings=settings, log=log, cache=cache,
        decode=lambda _path, data: pretrained_audio_features(
            extractor, state, decode_waveform(data, state.settings.sample_rate)
        ),
        row_ids=row_ids,
    )  # fmt: skip
    return pad_last_axis(arrays, state.frames)


def pretrained_audio_features(extractor: object, state: AudioState, wave: np.ndarray) -> np.ndarray:
    """A waveform cropped to the fitted length, through the pretrained feature extractor."""
    rate = state.settings.sample_rate
    return extract_audio_features(extractor, wave[: state.frames], rate).astype(np.float16)


def pad_last_axis(arrays: list[np.ndarray | None], default: int) -> FeatureColumn:
    """Per-row arrays padded with zeros; `lengths` counts the real steps on the last axis.
    Waveforms (wav2vec2-style inputs) always pad to the fitted length `default`: models that
    read them without an attention mask see the padding, so it must not depend on which
    rows share a batch or a chunk. Other arrays pad to the largest."""
    shapes = [a.shape for a in arrays if a is not None]
    waveforms = not shapes or len(shapes[0]) == 1
    shape = (default,) if waveforms else tuple(np.max(shapes, axis=0))
    values = np.zeros((len(arrays), *shape), dtype=np.float16)
    lengths = np.zeros(len(arrays), dtype=np.int64)
    for index, array in enumerate(arrays):
        if array is not None:
            values[(index, *[slice(0, n) for n in array.shape])] = array
            lengths[index] = array.shape[-1]
    return FeatureColumn(values, lengths > 0, lengths)
