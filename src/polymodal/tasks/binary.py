"""Binary targets: two labels, one logit (binary cross-entropy)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from polymodal.data.column import category_text
from polymodal.tasks.base import mean_over_known, register_task
from polymodal.tasks.classes import ClassTask


@register_task
class BinaryTask(ClassTask):
    name = "binary"
    inference_order = 2

    @classmethod
    def claims(cls, values: list) -> bool:
        return len({category_text(v) for v in values}) == 2

    @property
    def outputs(self) -> int:
        return 1

    def loss(
        self, outputs: torch.Tensor, target: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        per_row = F.binary_cross_entropy_with_logits(
            outputs[:, 0], target.float(), reduction="none"
        )
        return mean_over_known(per_row, known)

    def label_probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        positive = torch.sigmoid(outputs.float()[:, 0])
        return torch.stack([1 - positive, positive], dim=-1)
