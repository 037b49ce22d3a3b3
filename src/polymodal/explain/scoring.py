"""Scores shared by explanations, robustness checks and group metrics.

Every analysis here asks the same question, "how good is the model on these rows when its
inputs are edited?", so one higher-is-better number per target keeps them comparable: each
task's score metric, negated where lower is better (`neg_rmse` for numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from polymodal.data.table import Table
from polymodal.model import Model
from polymodal.tasks import encode_targets

Features = dict[str, dict[str, torch.Tensor]]


@dataclass
class Truth:
    """Encoded true values of one target and which rows have one."""

    values: np.ndarray
    known: np.ndarray


def metric_name(model: Model, target: str) -> str:
    """The name of `score`: the task's score metric, `neg_` first where lower is better."""
    task = model.task(target)
    name = task.score_metric
    return name if task.metrics[name] else f"neg_{name}"


def truths(model: Model, table: Table) -> dict[str, Truth]:
    """Encoded targets present in `table` (a table without a target column gives none)."""
    present = [s for s in model.schema_.targets if s.column in table.frame.columns]
    return {name: Truth(*pair) for name, pair in encode_targets(present, table).items()}


def score(model: Model, target: str, outputs: np.ndarray, truth: Truth) -> float:
    """The target's higher-is-better metric over rows with a known target (NaN if none)."""
    task = model.task(target)
    return task.score(truth.values, truth.known, task.decode(outputs))


def scores(model: Model, outputs: dict[str, np.ndarray], known: dict[str, Truth]) -> dict:
    """`score` for every target that has truths."""
    return {name: score(model, name, outputs[name], truth) for name, truth in known.items()}


def only_inputs(features: Features, keep: set[str] | frozenset[str]) -> Features:
    """The same features with every input outside `keep` marked absent, exactly as a missing
    file or empty cell is masked, so "removing a modality" is what the model saw in training."""
    return {
        name: item if name in keep else {**item, "present": torch.zeros_like(item["present"])}
        for name, item in features.items()
    }


def take_rows(features: Features, rows: np.ndarray) -> Features:
    index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
    return {name: {k: v[index] for k, v in item.items()} for name, item in features.items()}


def predicted_classes(model: Model, target: str, outputs: np.ndarray) -> tuple[np.ndarray, list]:
    """(reference per row, prediction per row): what each row's explanation is about (for
    class tasks the predicted class), fixed once from the outputs with every input, so every
    coalition is scored on the same thing."""
    task = model.task(target)
    return task.reference(task.decode(outputs))


def explained_value(
    model: Model, target: str, outputs: np.ndarray, classes: np.ndarray
) -> np.ndarray:
    """Per row, the value the task's Shapley contributions explain (e.g. the probability of
    the reference class, or the predicted value)."""
    task = model.task(target)
    return task.explained_value(task.decode(outputs), classes)
