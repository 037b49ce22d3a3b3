"""Multi-class targets: one of several labels per row (softmax, label-smoothed cross-entropy)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from polymodal.tasks.base import mean_over_known, register_task
from polymodal.tasks.classes import ClassTask


@register_task
class MulticlassTask(ClassTask):
    name = "multiclass"
    inference_order = 4  # what any other column of labels becomes

    @classmethod
    def claims(cls, values: list) -> bool:
        return True

    def loss(
        self, outputs: torch.Tensor, target: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        per_row = F.cross_entropy(outputs, target.long(), reduction="none", label_smoothing=0.05)
        return mean_over_known(per_row, known)

    def label_probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(outputs.float(), dim=-1)
