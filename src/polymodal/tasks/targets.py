"""Target columns → tasks: which task a column is, its fitted state, its training arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from polymodal.config import TargetConfig
from polymodal.data.column import is_missing
from polymodal.data.files import path_text
from polymodal.data.problems import BadInputError
from polymodal.data.table import Table
from polymodal.tasks.base import TASKS, TargetState, Task, task_for


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


def task_class(config: TargetConfig) -> type[Task]:
    """The configured task's class; the base class (plain column cells) while inferring."""
    return TASKS.get(config.task) if config.task else Task


def fit_target(
    frame: pd.DataFrame, config: TargetConfig, table_name: str, base_dir: Path | None = None
) -> TargetState:
    """The fitted state of one target from the training rows `frame` (file paths in its
    cells start from `base_dir`, the table's folder)."""
    cells = task_class(config).cells(frame, config, table_name)
    values = [v for v in cells if not is_missing(v)]
    if not values:
        raise BadInputError(f"{table_name}: target '{config.column}' has no values")
    task = TASKS.get(infer_task(values, config))
    if task.reads_files:
        values = resolved(values, base_dir or Path("."))
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
        task = task_for(state)
        cells = task.cells(table.frame, state, table.name)
        out[state.column] = task.encode(
            resolved(cells, table.base_dir) if task.reads_files else cells
        )
    return out


def resolved(cells: list, base_dir: Path) -> list:
    """File-path cells made absolute against `base_dir`; missing cells stay as they are."""
    return [cell if is_missing(cell) else path_text(cell, base_dir) for cell in cells]


def target_inputs(configs: list[TargetConfig]) -> list[str] | None:
    """The input columns the targets name (a match target's columns), when every target
    names them; None: the inputs are every column that is not a target."""
    named = [task_class(config).input_columns(config) for config in configs]
    if not named or any(columns is None for columns in named):
        return None
    return list(dict.fromkeys(column for columns in named for column in columns))


def generated_counts(table: Table) -> dict[str, dict[str, int]]:
    """Per column, per task: how many rows point at a file that task generated (told by its
    provenance mark). Every registered task is asked about every column of strings, so no
    caller needs to know which tasks write files."""
    counts: dict[str, dict[str, int]] = {}
    for column in table.frame.columns:
        cells = [
            c for c in table.frame[column].tolist() if isinstance(c, str) and not is_missing(c)
        ]
        if not cells:
            continue
        paths = [path_text(cell, table.base_dir) for cell in cells]
        found = {name: TASKS.get(name).count_generated(paths) for name in TASKS.names()}
        if any(found.values()):
            counts[str(column)] = {name: count for name, count in found.items() if count}
    return counts
