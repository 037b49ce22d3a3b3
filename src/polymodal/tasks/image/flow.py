"""The head of an image target: conditional flow matching (rectified flow) with a U-Net.

Training: for a target image x (in [-1, 1]), noise n and a time t ~ U(0, 1), the U-Net sees
x_t = (1 - t)·n + t·x and predicts the velocity x - n; the head returns both, packed as
[batch, 2, C, S, S], and the task's loss is their mean squared difference. In eval mode (the
validation loss) the noise and times come from a fixed seed, so epochs compare on the same
draws.

The condition is twofold: the fused inputs pooled to one vector (projected and added to the
U-Net's time embedding) and the fused token memory after a learned null token (cross-attended).
Classifier-free guidance: while training, a row's whole condition is dropped (every memory
token masked, the null token left, and the learned null vector in place of the pooled one) with
probability `condition_dropout`; a row with every input missing is always unconditional.
Sampling runs `steps` Euler steps from noise at t = 0 to t = 1 with
v = v_uncond + guidance·(v_cond - v_uncond): guidance 0 is the unconditional path, 1 the
conditional one alone (each then costs one network pass a step instead of two).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from polymodal.fusion.base import Fused, inputs_present, pooled
from polymodal.tasks.image.unet import UNet

VALIDATION_SEED = 1234


class Condition(NamedTuple):
    """What the U-Net is conditioned on, for a batch of rows."""

    vector: Tensor  # [batch, time_dim]: added to the time embedding
    tokens: Tensor  # [batch, 1 + memory tokens, dim]: cross-attended
    mask: Tensor  # [batch, 1 + memory tokens]: True where a token is read


class Sampling(Protocol):
    """What the head reads at each call (the task's current settings)."""

    size: int
    channels: int
    condition_dropout: float
    guidance: float
    steps: int
    seed: int


def row_noise(seed: int, rows: range, shape: tuple[int, ...]) -> Tensor:
    """Standard normal noise per row, drawn from (seed, row number) alone: a row's sample is
    the same (up to float rounding) whatever the batch or chunk it is predicted in."""
    return torch.from_numpy(
        np.stack(
            [np.random.default_rng([seed, row]).standard_normal(shape, np.float32) for row in rows]
        )
    )


class FlowHead(nn.Module):
    def __init__(
        self, settings: Sampling, dim: int, width: int, heads: int, dropout: float
    ) -> None:
        super().__init__()
        self.settings = settings
        self.null = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.unet = UNet(settings.channels, width, dim, heads, dropout)
        self.vector = nn.Linear(dim, self.unet.time_dim)
        self.null_vector = nn.Parameter(torch.zeros(1, self.unet.time_dim))
        self.next_row = 0  # the number of the next row sampled (Task.number_rows sets it)

    def forward(self, fused: Fused, target: Tensor | None = None) -> Tensor:
        if target is not None:
            return self.velocities(fused, target.float())
        return self.sample(fused)

    def condition(self, fused: Fused, keep: Tensor | None = None) -> Condition:
        """(vector, tokens, mask): the pooled inputs' vector, the null token then the memory;
        a row whose inputs are all missing (or whose condition is dropped, `keep` False) gets
        the null vector and sees the null token only."""
        batch = fused.memory.shape[0]
        present = inputs_present(fused)
        if keep is not None:
            present = present & keep
        vector = self.vector(pooled(fused).to(self.null_vector.dtype))
        vector = torch.where(present[:, None], vector, self.null_vector)
        null = self.null.expand(batch, -1, -1).to(fused.memory.dtype)
        tokens = torch.cat([null, fused.memory], dim=1)
        always = torch.ones(batch, 1, dtype=torch.bool, device=tokens.device)
        mask = torch.cat([always, fused.memory_mask & present[:, None]], dim=1)
        return Condition(vector, tokens, mask)

    def unconditional(self, condition: Condition) -> Condition:
        """The same rows with every input dropped: the null vector and the null token."""
        mask = condition.mask.clone()
        mask[:, 1:] = False
        vector = self.null_vector.expand_as(condition.vector)
        return Condition(vector, condition.tokens, mask)

    def velocities(self, fused: Fused, x: Tensor) -> Tensor:
        """[batch, 2, C, S, S]: the predicted velocity and the true one, x - noise."""
        batch = x.shape[0]
        if self.training:
            noise, t = torch.randn_like(x), torch.rand(batch, device=x.device)
            keep = torch.rand(batch, device=x.device) >= self.settings.condition_dropout
        else:
            generator = torch.Generator(device=x.device).manual_seed(VALIDATION_SEED)
            noise = torch.randn(x.shape, generator=generator, device=x.device)
            t = torch.rand(batch, generator=generator, device=x.device)
            keep = None
        shaped = t[:, None, None, None]
        moved = (1 - shaped) * noise + shaped * x
        predicted = self.unet(moved, t, *self.condition(fused, keep))
        return torch.stack([predicted, x - noise], dim=1)

    def sample(self, fused: Fused) -> Tensor:
        """Images [batch, C, S, S] in [-1, 1], by Euler steps with classifier-free guidance."""
        s = self.settings
        batch = fused.memory.shape[0]
        rows = range(self.next_row, self.next_row + batch)
        self.next_row += batch
        x = row_noise(s.seed, rows, (s.channels, s.size, s.size)).to(fused.memory.device)
        conditional = self.condition(fused)
        unconditional = self.unconditional(conditional)
        step = 1.0 / s.steps
        for index in range(s.steps):
            t = torch.full((batch,), index * step, device=x.device)
            if s.guidance == 0:
                velocity = self.unet(x, t, *unconditional)
            elif s.guidance == 1:
                velocity = self.unet(x, t, *conditional)
            else:  # two passes, not one of twice the batch: each path computes as it does alone
                plain = self.unet(x, t, *unconditional)
                velocity = plain + s.guidance * (self.unet(x, t, *conditional) - plain)
            x = x + step * velocity
        return x.clamp(-1.0, 1.0)
