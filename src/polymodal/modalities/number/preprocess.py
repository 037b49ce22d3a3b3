"""Numbers: standardised with the training mean and std, clipped, with a missing mask."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from polymodal.data.column import FeatureColumn, is_missing
from polymodal.data.problems import ProblemLog

CLIP = 10.0


class NumberState(BaseModel):
    kind: Literal["number"] = "number"
    column: str
    source: str
    mean: float
    std: float


def parse_numbers(cells: list[object]) -> tuple[np.ndarray, list[int]]:
    """Floats with NaN where empty; also the positions of cells that are not numbers."""
    numbers = pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce").to_numpy(
        float, copy=True
    )
    bad = [
        i
        for i, (cell, number) in enumerate(zip(cells, numbers, strict=True))
        if (np.isnan(number) and not is_missing(cell)) or np.isinf(number)
    ]
    numbers[bad] = np.nan
    return numbers, bad


def fit_number(cells: list[object], column: str, source: str) -> NumberState:
    numbers, _ = parse_numbers(cells)
    finite = numbers[np.isfinite(numbers)]
    mean = float(finite.mean()) if finite.size else 0.0
    std = float(finite.std()) if finite.size > 1 else 1.0
    return NumberState(column=column, source=source, mean=mean, std=std if std > 1e-12 else 1.0)


def encode_numbers(
    state: NumberState, cells: list[object], log: ProblemLog, row_ids: list[int] | None = None
) -> FeatureColumn:
    """Standardised values [rows, 1], clipped to ±10 so one outlier cannot dominate."""
    numbers, bad = parse_numbers(cells)
    rows = row_ids if row_ids is not None else range(len(cells))
    rows = list(rows)
    for index in bad:
        log.add(int(rows[index]), state.column, None, f"not a number: {str(cells[index])[:40]!r}")
    present = np.isfinite(numbers)
    scaled = np.clip((np.nan_to_num(numbers) - state.mean) / state.std, -CLIP, CLIP)
    values = np.where(present, scaled, 0.0).astype(np.float32)[:, None]
    return FeatureColumn(values, present)
