"""What a pretrained image backbone dictates (size, normalisation) and how it gives tokens."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from polymodal.data.pretrained import PretrainedState

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
DEFAULT_SIDE = 224


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


def image_tokens(backbone: nn.Module, library: str, images: torch.Tensor) -> torch.Tensor:
    if library == "timm":
        return as_tokens(backbone.forward_features(images))
    return as_tokens(backbone(pixel_values=images).last_hidden_state)


def as_tokens(hidden: torch.Tensor) -> torch.Tensor:
    """A CNN's [batch, channels, h, w] map → [batch, h·w, channels]; tokens pass through."""
    return hidden.flatten(2).transpose(1, 2) if hidden.dim() == 4 else hidden
