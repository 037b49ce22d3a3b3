"""Scores shared by explanations, robustness checks and group metrics.

Every analysis here asks the same question, "how good is the model on these rows when its
inputs are edited?", so one higher-is-better number per target keeps them comparable:
accuracy for classes, micro-F1 for multi-label targets and −RMSE for numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from polymodal.data.features import encode_targets
from polymodal.data.table import Table
from polymodal.evaluation.metrics import target_metrics
from polymodal.model import Model, decode_outputs

Features = dict[str, dict[str, torch.Tensor]]
METRICS = {
    "multiclass": "accuracy",
    "binary": "accuracy",
    "multilabel": "micro_f1",
    "regression": "neg_rmse",
}


@dataclass
class Truth:
    """Encoded true values of one target and which rows have one."""

    values: np.ndarray
    known: np.ndarray


def metric_name(model: Model, target: str) -> str:
    return METRICS[model.head(target).state.task]


def truths(model: Model, table: Table) -> dict[str, Truth]:
    """Encoded targets present in `table` (a table without a target column gives none)."""
    present = [s for s in model.schema_.targets if s.column in table.frame.columns]
    if not present:
        return {}
    schema = model.schema_.model_copy(update={"targets": present})
    return {name: Truth(*pair) for name, pair in encode_targets(schema, table).items()}


def score(model: Model, target: str, outputs: np.ndarray, truth: Truth) -> float:
    """The target's higher-is-better metric over rows with a known target (NaN if none)."""
    if not truth.known.any():
        return float("nan")
    head = model.head(target)
    metrics = target_metrics(head.state, truth.values, truth.known, decode_outputs(head, outputs))
    name = METRICS[head.state.task]
    return -metrics["rmse"] if name == "neg_rmse" else metrics[name]


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
    """(class index per row, prediction per row). The explained quantity is the probability
    of that class (for multi-label, the most probable label), fixed once from the outputs with
    every input, so every coalition is scored on the same class; regression has no classes."""
    head = model.head(target)
    decoded = decode_outputs(head, outputs)
    if head.state.task == "regression":
        return np.zeros(len(outputs), dtype=np.int64), [float(v) for v in decoded["value"]]
    chosen = decoded["probabilities"].argmax(axis=1)
    return chosen, [str(head.state.classes[i]) for i in chosen]


def explained_value(
    model: Model, target: str, outputs: np.ndarray, classes: np.ndarray
) -> np.ndarray:
    """Per row, the probability of the given class; the value in target units for regression."""
    head = model.head(target)
    decoded = decode_outputs(head, outputs)
    if head.state.task == "regression":
        return decoded["value"]
    return decoded["probabilities"][np.arange(len(classes)), classes]
