"""What a pretrained video backbone dictates (frames per clip) and how it gives tokens: a
video model reads whole clips, an image model reads each frame."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.data.pretrained import PretrainedState
from polymodal.modalities.image.pretrained import as_tokens, image_tokens

VIDEO_MODEL_KEY = "num_frames"  # video transformers (VideoMAE, TimeSformer) read whole clips


def video_frames(state: PretrainedState, default: int) -> int:
    """A video model reads a fixed number of frames; an image model reads any."""
    return int(state.architecture.get(VIDEO_MODEL_KEY) or default)


def per_frame_tokens(state: PretrainedState) -> bool:
    """An image model gives one token per frame; a video model its own clip tokens."""
    return VIDEO_MODEL_KEY not in state.architecture


def video_tokens(
    backbone: nn.Module, pretrained: PretrainedState, values: torch.Tensor
) -> torch.Tensor:
    """[batch, frames, 3, H, W] → [batch, steps, width]: the clip model's tokens, or one token
    per frame (the mean of an image model's tokens)."""
    if not per_frame_tokens(pretrained):
        return as_tokens(backbone(pixel_values=values.float()).last_hidden_state)
    batch, frames = values.shape[:2]
    per_frame = image_tokens(backbone, pretrained.library, values.flatten(0, 1).float())
    return per_frame.mean(dim=1).view(batch, frames, -1)
