"""What a pretrained audio backbone dictates: its feature extractor, rebuilt offline from
the settings saved at fit time."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from polymodal.data.pretrained import PretrainedState
from polymodal.encoders.base import lengths_mask
from polymodal.modalities.image.pretrained import as_tokens


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


def audio_tokens(
    backbone: nn.Module, pretrained: BaseModel, values: torch.Tensor, lengths: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveform models (wav2vec2, HuBERT) get an attention mask where their extractor asks
    for one, and their output mask from the convolution's length arithmetic; spectrogram
    models (Whisper, AST) read fixed-size inputs."""
    arguments = {pretrained.input_name or "input_values": values}
    waveform = values.dim() == 2 and lengths is not None
    if waveform and pretrained.feature_extractor.get("return_attention_mask"):
        arguments["attention_mask"] = lengths_mask(lengths, values.shape[1]).long()
    hidden = as_tokens(backbone(**arguments).last_hidden_state)
    steps = hidden.shape[1]
    if waveform and hasattr(backbone, "_get_feat_extract_output_lengths"):
        output_lengths = backbone._get_feat_extract_output_lengths(lengths).clamp(max=steps)
        return hidden, lengths_mask(output_lengths, steps)
    return hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
