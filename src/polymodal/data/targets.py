"""Targets: infer the task, learn label maps or scaling, encode to training arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel

from polymodal.config import TargetConfig, Task
from polymodal.data.column import is_missing
from polymodal.data.problems import BadInputError
from polymodal.data.tabular import category_text

MAX_REGRESSION_CLASSES = 20


class TargetState(BaseModel):
    column: str
    task: Task
    weight: float = 1.0
    separator: str = "|"
    classes: list[str] = []  # label names for classification tasks
    mean: float = 0.0  # regression targets are learned standardised
    std: float = 1.0

    @property
    def n_outputs(self) -> int:
        if self.task == "regression" or self.task == "binary":
            return 1
        return len(self.classes)


def infer_task(series: pd.Series, config: TargetConfig) -> Task:
    if config.task:
        return config.task
    values = [v for v in series.tolist() if not is_missing(v)]
    if values and isinstance(values[0], list | tuple):
        return "multilabel"
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
    if len(values) and numbers.notna().all():
        whole = bool(np.all(np.mod(numbers, 1) == 0))
        if not whole or numbers.nunique() > MAX_REGRESSION_CLASSES:
            return "regression"
    return "binary" if len({category_text(v) for v in values}) == 2 else "multiclass"


def fit_target(series: pd.Series, config: TargetConfig, table_name: str) -> TargetState:
    values = [v for v in series.tolist() if not is_missing(v)]
    if not values:
        raise BadInputError(f"{table_name}: target '{config.column}' has no values")
    task = infer_task(series, config)
    state = TargetState(
        column=config.column, task=task, weight=config.weight, separator=config.separator
    )
    if task == "regression":
        numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").dropna()
        if numbers.empty:
            raise BadInputError(f"{table_name}: regression target '{config.column}' has no numbers")
        state.mean, state.std = float(numbers.mean()), float(numbers.std(ddof=0) or 1.0)
        return state
    if task == "multilabel":
        labels = {label for value in values for label in _labels(value, config.separator)}
        state.classes = sorted(labels)
    else:
        state.classes = sorted({category_text(v) for v in values})
    if len(state.classes) < 2:
        raise BadInputError(
            f"{table_name}: target '{config.column}' has one class ({state.classes[0]!r}); "
            "a classifier needs at least two"
        )
    return state


def _labels(value: object, separator: str) -> list[str]:
    if isinstance(value, list | tuple | np.ndarray):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(separator) if part.strip()]


def encode_target(state: TargetState, series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values, known): class indices, multi-hot rows or standardised numbers; `known` is False
    where the target is missing or holds a label the model never saw (such rows add no loss)."""
    cells = series.tolist()
    known = np.array([not is_missing(v) for v in cells])
    if state.task == "regression":
        numbers = pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce").to_numpy(float)
        known &= np.isfinite(numbers)
        return np.where(known, (numbers - state.mean) / state.std, 0).astype(np.float32), known
    lookup = {name: i for i, name in enumerate(state.classes)}
    if state.task == "multilabel":
        hot = np.zeros((len(cells), len(state.classes)), dtype=np.float32)
        for row, cell in enumerate(cells):
            if known[row]:
                for label in _labels(cell, state.separator):
                    if label in lookup:
                        hot[row, lookup[label]] = 1.0
        return hot, known
    indices = np.array(
        [lookup.get(category_text(v), -1) if k else -1 for v, k in zip(cells, known, strict=True)]
    )
    known &= indices >= 0
    return np.maximum(indices, 0).astype(np.int64), known
