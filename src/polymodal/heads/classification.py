"""Multi-class (softmax), binary (one logit) and multi-label (one logit per label) heads."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from polymodal.heads.base import HEADS, Head, mean_over_known


@HEADS.register("multiclass")
class MulticlassHead(Head):
    def loss(
        self, outputs: torch.Tensor, target: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        per_row = F.cross_entropy(outputs, target.long(), reduction="none", label_smoothing=0.05)
        return mean_over_known(per_row, known)

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(outputs.float(), dim=-1)


@HEADS.register("binary")
class BinaryHead(Head):
    def loss(
        self, outputs: torch.Tensor, target: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        per_row = F.binary_cross_entropy_with_logits(
            outputs[:, 0], target.float(), reduction="none"
        )
        return mean_over_known(per_row, known)

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        positive = torch.sigmoid(outputs.float()[:, 0])
        return torch.stack([1 - positive, positive], dim=-1)


@HEADS.register("multilabel")
class MultilabelHead(Head):
    def loss(
        self, outputs: torch.Tensor, target: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        per_row = F.binary_cross_entropy_with_logits(outputs, target.float(), reduction="none")
        return mean_over_known(per_row.mean(dim=-1), known)

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(outputs.float())
