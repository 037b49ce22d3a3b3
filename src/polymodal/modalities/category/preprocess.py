"""Categories: a vocabulary of the training values, with a missing and an unknown bucket."""

from __future__ import annotations

from collections import Counter
from typing import Literal

import numpy as np
from pydantic import BaseModel

from polymodal.data.column import FeatureColumn, category_text, cell_text, is_missing
from polymodal.data.problems import ProblemLog

MISSING_INDEX, UNKNOWN_INDEX = 0, 1
MAX_CATEGORIES = 10_000


class CategoryState(BaseModel):
    kind: Literal["category"] = "category"
    column: str
    source: str
    vocabulary: list[str]  # index i + 2; 0 is missing, 1 is unknown


def fit_category(cells: list[object], column: str, source: str) -> CategoryState:
    counts = Counter(category_text(cell) for cell in cells if cell_text(cell)[0] is not None)
    vocabulary = [value for value, _ in counts.most_common(MAX_CATEGORIES)]
    return CategoryState(column=column, source=source, vocabulary=sorted(vocabulary))


def encode_categories(
    state: CategoryState, cells: list[object], log: ProblemLog, row_ids: list[int] | None = None
) -> FeatureColumn:
    """Indices [rows]: 0 missing (masked), 1 unknown (reported, still used), else 2 + position.
    Undecodable bytes are reported as in a text column, and masked."""
    lookup = {value: i + 2 for i, value in enumerate(state.vocabulary)}
    rows = list(row_ids) if row_ids is not None else list(range(len(cells)))
    values = np.zeros(len(cells), dtype=np.int64)
    for index, cell in enumerate(cells):
        if is_missing(cell):
            continue
        _, problem = cell_text(cell)
        if problem:
            log.add(rows[index], state.column, None, problem)
            continue
        text = category_text(cell)
        values[index] = lookup.get(text, UNKNOWN_INDEX)
        if values[index] == UNKNOWN_INDEX:
            log.add(rows[index], state.column, None, f"unknown category {text[:40]!r}")
    return FeatureColumn(values, values != MISSING_INDEX)
