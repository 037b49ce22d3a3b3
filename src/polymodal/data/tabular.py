"""Numbers (standardised, with a missing mask) and categories (vocabulary + unknown bucket)."""

from __future__ import annotations

from collections import Counter
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from polymodal.data.column import FeatureColumn, is_missing
from polymodal.data.problems import ProblemLog

MISSING_INDEX, UNKNOWN_INDEX = 0, 1
MAX_CATEGORIES = 10_000
CLIP = 10.0


class NumberState(BaseModel):
    kind: Literal["number"] = "number"
    column: str
    source: str
    mean: float
    std: float


class CategoryState(BaseModel):
    kind: Literal["category"] = "category"
    column: str
    source: str
    vocabulary: list[str]  # index i + 2; 0 is missing, 1 is unknown


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


def category_text(cell: object) -> str:
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))  # 3.0 read from a column with blanks is the category "3"
    return str(cell).strip()


def fit_category(cells: list[object], column: str, source: str) -> CategoryState:
    counts = Counter(category_text(cell) for cell in cells if not is_missing(cell))
    vocabulary = [value for value, _ in counts.most_common(MAX_CATEGORIES)]
    return CategoryState(column=column, source=source, vocabulary=sorted(vocabulary))


def encode_categories(
    state: CategoryState, cells: list[object], log: ProblemLog, row_ids: list[int] | None = None
) -> FeatureColumn:
    """Indices [rows]: 0 missing (masked), 1 unknown (reported, still used), else 2 + position."""
    lookup = {value: i + 2 for i, value in enumerate(state.vocabulary)}
    rows = list(row_ids) if row_ids is not None else list(range(len(cells)))
    values = np.zeros(len(cells), dtype=np.int64)
    for index, cell in enumerate(cells):
        if is_missing(cell):
            continue
        text = category_text(cell)
        values[index] = lookup.get(text, UNKNOWN_INDEX)
        if values[index] == UNKNOWN_INDEX:
            log.add(rows[index], state.column, None, f"unknown category {text[:40]!r}")
    return FeatureColumn(values, values != MISSING_INDEX)
