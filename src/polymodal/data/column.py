"""What preprocessing hands to the model for one input column."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FeatureColumn:
    """Features for every row of one input.

    `values` holds one array per row stacked on axis 0; `present` is False where the row's
    input is missing or could not be decoded (the model masks it, never reads zeros as data);
    `lengths` counts the valid steps of variable-length inputs (audio frames, text tokens).
    """

    values: np.ndarray
    present: np.ndarray
    lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.present)

    def take(self, rows: np.ndarray) -> FeatureColumn:
        lengths = None if self.lengths is None else self.lengths[rows]
        return FeatureColumn(self.values[rows], self.present[rows], lengths)


def is_missing(value: object) -> bool:
    """True for None, NaN and blank strings: a cell with nothing in it."""
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()
