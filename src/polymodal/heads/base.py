"""The head contract: `Fused` features → one output per row for one target, plus its loss.

Heads take features and return outputs; losses take outputs and targets (never the model),
so each is testable alone. With late fusion a head keeps one small MLP per branch and
averages the branches' outputs with the fusion's weights.
"""

from __future__ import annotations

import torch
from torch import nn

from polymodal.data.targets import TargetState
from polymodal.fusion.base import Fused
from polymodal.registry import Registry

HEADS: Registry[nn.Module] = Registry("head")


class Head(nn.Module):
    def __init__(self, state: TargetState, dim: int, branches: int, dropout: float) -> None:
        super().__init__()
        self.state = state
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(dim),
                nn.Linear(dim, dim),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(dim, state.n_outputs),
            )
            for _ in range(branches)
        )

    def forward(self, fused: Fused) -> torch.Tensor:
        """Raw outputs [batch, n_outputs] (logits, or standardised values for regression)."""
        outputs = torch.stack(
            [branch(fused.features[:, i]) for i, branch in enumerate(self.branches)], dim=1
        )
        return (outputs * fused.weights.unsqueeze(-1)).sum(dim=1)

    def loss(
        self, outputs: torch.Tensor, target: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor | None:
        """Class probabilities [batch, classes], or None for regression."""
        raise NotImplementedError


def mean_over_known(per_row: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Average loss over rows whose target is known; 0 (with a gradient path) if none are."""
    known = known.to(per_row.dtype)
    return (per_row * known).sum() / known.sum().clamp(min=1.0)
