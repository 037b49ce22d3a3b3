"""Categories: a vocabulary with missing and unknown buckets, an embedding, random swaps,
report slices by value, and a select box on the page. Unknown values are warnings."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from polymodal.modalities.base import EncodeContext, FitContext, Modality, Sweep, Widget, register
from polymodal.modalities.category import encoder  # noqa: F401  (registers the encoder)
from polymodal.modalities.category.preprocess import (
    CategoryState,
    encode_categories,
    fit_category,
)


@register
class Category(Modality):
    name = "category"
    state = CategoryState
    tabular = embedded = groups_rows = lenient = True
    widget = Widget("select")
    query = "text"

    def fit(self, cells: list, column: str, source: str, context: FitContext) -> CategoryState:
        return fit_category(cells, column, source)

    def encode(self, state: CategoryState, cells: list, context: EncodeContext) -> Any:
        return encode_categories(state, cells, context.log, context.row_ids)

    def sweeps(self, state: CategoryState, item: dict, cells: list, base_dir: Any) -> list[Sweep]:
        values, size = item["values"], len(state.vocabulary)
        return [
            Sweep(state.column, "random swap", "fraction of rows", [0.1, 0.25, 0.5, 1.0],
                  lambda p, rng: {"values": swap(values, p, size, rng)}),
        ]  # fmt: skip

    def field_choices(self, state: CategoryState) -> list[str] | None:
        return state.vocabulary


def swap(values: torch.Tensor, p: float, size: int, rng: np.random.Generator) -> torch.Tensor:
    """A fraction `p` of the known values replaced by random other ones."""
    hit = torch.from_numpy(rng.random(len(values)) < p) & (values >= 2)
    others = torch.from_numpy(rng.integers(2, 2 + max(size, 1), len(values)))
    return torch.where(hit, others, values)
