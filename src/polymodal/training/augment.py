"""Cheap, batched augmentation of decoded features during training.

Small random shifts for images and video frames; SpecAugment-style time and frequency masks
for audio. They cost little next to the encoders. Off by default (`train.augment`): on
AV-MNIST they slowed convergence within the default 15 epochs (test accuracy 0.905 with,
0.929 without, both with modality dropout 0.2).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

MAX_SHIFT = 0.05  # fraction of the image side
TIME_MASK = 0.1  # fraction of the frames
FREQ_MASK = 0.1  # fraction of the mel bands


def augment_images(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """[batch, channels, H, W]: a random translation per image (borders repeat)."""
    batch = images.shape[0]
    shift = (torch.rand(batch, 2, generator=generator) * 2 - 1) * MAX_SHIFT * 2  # grid is [-1, 1]
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    theta = theta.to(images.device)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images.float(), grid, padding_mode="border", align_corners=False)


def augment_spectrograms(
    spectra: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[batch, mels, frames]: one time mask and one frequency mask per row."""
    batch, mels, frames = spectra.shape
    spectra = spectra.float()

    def band(size: int, fraction: float) -> torch.Tensor:
        width = (torch.rand(batch, 1, generator=generator) * fraction * size).long()
        start = (torch.rand(batch, 1, generator=generator) * size).long()
        steps = torch.arange(size)[None]
        return ((steps >= start) & (steps < start + width)).to(spectra.device)

    masked = band(mels, FREQ_MASK)[:, :, None] | band(frames, TIME_MASK)[:, None, :]
    return spectra.masked_fill(masked, 0.0)


def augment_batch(inputs: dict, kinds: dict[str, str]) -> dict:
    """A new batch with augmented image, video and audio features; others untouched (as are
    cached embeddings, and waveforms for pretrained audio encoders)."""
    out = {}
    for name, item in inputs.items():
        if "values" not in item:
            out[name] = item
            continue
        values = item["values"]
        if kinds[name] == "image":
            values = augment_images(values)
        elif kinds[name] == "video":
            batch, frames = values.shape[:2]
            values = augment_images(values.flatten(0, 1)).view(batch, frames, *values.shape[2:])
        elif kinds[name] == "audio" and values.dim() == 3:
            values = augment_spectrograms(values)
        out[name] = {**item, "values": values}
    return out
