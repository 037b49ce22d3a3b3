"""Metrics: accuracy, macro/weighted F1 and the confusion matrix for classes; RMSE, MAE and
R² for numbers; micro/macro F1 for multi-label targets."""

from __future__ import annotations

import numpy as np
import torch
from sklearn import metrics as skm

from polymodal.data.targets import TargetState


def primary_score(
    head: torch.nn.Module, outputs: torch.Tensor, values: torch.Tensor, known: torch.Tensor
) -> float:
    """The number early stopping watches (higher is better)."""
    known = known.bool()
    if not known.any():
        return 0.0
    task = head.state.task
    outputs, values = outputs[known], values[known]
    if task == "regression":
        return -float(torch.sqrt(((outputs[:, 0] - values) ** 2).mean()))
    probabilities = head.probabilities(outputs)
    if task == "multilabel":
        predicted = (probabilities > 0.5).numpy()
        return float(skm.f1_score(values.numpy(), predicted, average="micro", zero_division=0))
    return float((probabilities.argmax(dim=-1) == values.long()).float().mean())


def classification_metrics(true: list[str], predicted: list[str], classes: list[str]) -> dict:
    return {
        "rows": len(true),
        "accuracy": float(skm.accuracy_score(true, predicted)),
        "macro_f1": float(
            skm.f1_score(true, predicted, average="macro", labels=classes, zero_division=0)
        ),
        "weighted_f1": float(
            skm.f1_score(true, predicted, average="weighted", labels=classes, zero_division=0)
        ),
        "classes": classes,
        "confusion_matrix": skm.confusion_matrix(true, predicted, labels=classes).tolist(),
    }


def regression_metrics(true: np.ndarray, predicted: np.ndarray) -> dict:
    return {
        "rows": len(true),
        "rmse": float(np.sqrt(skm.mean_squared_error(true, predicted))),
        "mae": float(skm.mean_absolute_error(true, predicted)),
        "r2": float(skm.r2_score(true, predicted)) if len(true) > 1 else float("nan"),
    }


def multilabel_metrics(true: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    return {
        "rows": len(true),
        "micro_f1": float(skm.f1_score(true, predicted, average="micro", zero_division=0)),
        "macro_f1": float(skm.f1_score(true, predicted, average="macro", zero_division=0)),
        "subset_accuracy": float(skm.accuracy_score(true, predicted)),
        "classes": classes,
    }


def target_metrics(state: TargetState, true: np.ndarray, known: np.ndarray, outputs: dict) -> dict:
    """Metrics for one target from encoded true values and the model's decoded outputs."""
    if not known.any():
        return {"rows": 0}
    if state.task == "regression":
        true_values = true[known] * state.std + state.mean
        return regression_metrics(true_values, outputs["value"][known])
    if state.task == "multilabel":
        return multilabel_metrics(true[known], outputs["labels"][known], state.classes)
    names = np.asarray(state.classes)
    return classification_metrics(
        list(names[true[known]]), list(outputs["label"][known]), state.classes
    )
