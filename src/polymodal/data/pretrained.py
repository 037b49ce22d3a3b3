"""Preprocessing that a pretrained encoder dictates: its tokenizer, image size and
normalisation, audio feature extractor, frames per clip.

Everything is read from the source once, at fit time, into plain values kept in the fitted
schema (config.json), so a saved model preprocesses offline exactly as in training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from polymodal.config import EncoderChoice
from polymodal.hub import ResolvedSource, read_architecture, resolve_source

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
DEFAULT_SIDE = 224


class PretrainedState(BaseModel):
    """A pretrained encoder as fitted: the user's choice, where it was read from, and the
    architecture that rebuilds it without the source."""

    choice: EncoderChoice
    library: str
    folder: str
    architecture: dict
    feature_extractor: dict = Field(default_factory=dict, description="audio: its settings")
    input_name: str = Field("", description="audio: the backbone's input argument")

    def resolved(self) -> ResolvedSource:
        return ResolvedSource(self.choice.source, self.library, Path(self.folder))


def fit_pretrained(choice: EncoderChoice, key: str) -> PretrainedState:
    resolved = resolve_source(choice.source, key)
    return PretrainedState(
        choice=choice,
        library=resolved.library,
        folder=str(resolved.folder),
        architecture=read_architecture(resolved),
    )


def pretrained_tokenizer(state: PretrainedState) -> tuple[str, int]:
    """(the fast tokenizer's own JSON, the longest input the model takes)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(state.folder)
    if not tokenizer.is_fast:
        from polymodal.hub import PretrainedUnavailable

        raise PretrainedUnavailable(
            f"{state.choice.source}: polymodal needs a fast (tokenizer.json) tokenizer"
        )
    longest = state.architecture.get("max_position_embeddings") or 512
    if 0 < tokenizer.model_max_length < 100_000:
        longest = min(longest, tokenizer.model_max_length)
    return tokenizer.backend_tokenizer.to_str(), int(longest)


def image_normalisation(state: PretrainedState) -> tuple[int, list[float], list[float]]:
    """(square side, mean, std) the backbone was trained with."""
    if state.library == "timm":
        config = state.architecture.get("pretrained_cfg", {})
        side = int(config.get("input_size", [3, DEFAULT_SIDE, DEFAULT_SIDE])[-1])
        return side, list(config.get("mean", IMAGENET_MEAN)), list(config.get("std", IMAGENET_STD))
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(state.folder)
    size = (
        getattr(processor, "crop_size", None)
        if getattr(processor, "do_center_crop", False)
        else None
    )
    size = size or getattr(processor, "size", None) or {}
    side = size.get("height") or size.get("shortest_edge") or DEFAULT_SIDE
    mean = processor.image_mean if hasattr(processor, "image_mean") else IMAGENET_MEAN
    std = processor.image_std if hasattr(processor, "image_std") else IMAGENET_STD
    return (
        int(side),
        [float(v) for v in np.atleast_1d(mean)],
        [float(v) for v in np.atleast_1d(std)],
    )


def video_frames(state: PretrainedState, default: int) -> int:
    """A video model reads a fixed number of frames; an image model reads any."""
    return int(state.architecture.get("num_frames") or default)


def load_feature_extractor(state: PretrainedState) -> object:
    """The audio feature extractor, rebuilt from the settings saved at fit time."""
    import transformers

    settings = dict(state.feature_extractor)
    kind = getattr(transformers, settings.get("feature_extractor_type", ""), None)
    if kind is None:
        return transformers.AutoFeatureExtractor.from_pretrained(state.folder)
    return kind.from_dict(settings)


def fit_feature_extractor(state: PretrainedState) -> PretrainedState:
    from transformers import AutoFeatureExtractor

    extractor = AutoFeatureExtractor.from_pretrained(state.folder)
    return state.model_copy(
        update={
            "feature_extractor": extractor.to_dict(),
            "input_name": extractor.model_input_names[0],
        }
    )


def extract_audio_features(extractor: object, wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """One waveform → the extractor's array for it (raw normalised samples for wav2vec2,
    log-mel frames for Whisper, filter banks for AST), float32 without the batch axis."""
    output = extractor(wave, sampling_rate=sample_rate, return_tensors="np")
    name = extractor.model_input_names[0]
    return np.asarray(output[name][0], dtype=np.float32)
