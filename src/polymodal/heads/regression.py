"""Regression on the standardised target (Huber loss: robust to a few wild labels)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from polymodal.heads.base import HEADS, Head, mean_over_known


@HEADS.register("regression")
class RegressionHead(Head):
    def loss(
        self, outputs: torch.Tensor, target: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        per_row = F.smooth_l1_loss(outputs[:, 0], target.float(), reduction="none")
        return mean_over_known(per_row, known)

    def probabilities(self, outputs: torch.Tensor) -> None:
        return None
