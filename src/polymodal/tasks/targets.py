"""Target columns → tasks: which task a column is, its fitted state, its training arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd

from polymodal.config import TargetConfig
from polymodal.data.column import is_missing
from polymodal.data.problems import BadInputError
from polymodal.data.table import Table
from polymodal.tasks.base import TASKS, TargetState, task_for


def infer_task(values: list, config: TargetConfig) -> str:
    """The configured task, else the first registered task, in `inference_order`, that
    claims the column's values."""
    if config.task:
        TASKS.get(config.task)  # an unknown name raises with the known ones
        return config.task
    ordered = sorted(
        (TASKS.get(name).inference_order, name)
        for name in TASKS.names()
        if TASKS.get(name).inference_order is not None
    )
    for _, name in ordered:
        if TASKS.get(name).claims(values):
            return name
    raise BadInputError(f"target '{config.column}': no task fits its values; set targets.task")


def fit_target(series: pd.Series, config: TargetConfig, table_name: str) -> TargetState:
    values = [v for v in series.tolist() if not is_missing(v)]
    if not values:
        raise BadInputError(f"{table_name}: target '{config.column}' has no values")
    task = TASKS.get(infer_task(values, config))
    if config.options and not task.takes_options:
        raise BadInputError(
            f"{table_name}: target '{config.column}' is a {task.name} target, which takes no "
            f"options (given: {', '.join(sorted(config.options))})"
        )
    return task.fit(values, config, table_name)


def encode_targets(
    states: list[TargetState], table: Table
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(values, known) per target of `table`; every target column must be there."""
    out = {}
    for state in states:
        if state.column not in table.frame.columns:
            columns = ", ".join(map(str, table.frame.columns))
            raise BadInputError(
                f"{table.name}: no target column '{state.column}' (columns: {columns})"
            )
        out[state.column] = task_for(state).encode(table.frame[state.column].tolist())
    return out
