"""SpecAugment-style time and frequency masks on training spectrograms."""

from __future__ import annotations

import torch

TIME_MASK = 0.1  # fraction of the frames
FREQ_MASK = 0.1  # fraction of the mel bands


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
