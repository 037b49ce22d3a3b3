"""Regression: a number per row, learned standardised with a Huber loss (robust to a few wild
labels), reported in the target's own units."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm
from torch.nn import functional as F

from polymodal.config import TargetConfig
from polymodal.data.problems import BadInputError
from polymodal.tasks.base import TargetPrediction, TargetState, Task, mean_over_known, register_task

MAX_CLASSES = 20  # whole numbers with more distinct values than this are quantities, not labels


class ValuePrediction(TargetPrediction):
    predicted: float


def as_numbers(cells: list) -> np.ndarray:
    return pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce").to_numpy(float)


@register_task
class RegressionTask(Task):
    name = "regression"
    metrics: ClassVar[dict[str, bool]] = {"rmse": False, "mae": False, "r2": True}
    score_metric = "rmse"
    inference_order = 1
    explained = "the predicted value"

    @classmethod
    def claims(cls, values: list) -> bool:
        numbers = as_numbers(values)
        if not len(values) or np.isnan(numbers).any():
            return False
        whole = bool(np.all(np.mod(numbers, 1) == 0))
        return not whole or len(np.unique(numbers)) > MAX_CLASSES

    @classmethod
    def fit(cls, values: list, config: TargetConfig, table_name: str) -> TargetState:
        numbers = as_numbers(values)
        numbers = numbers[np.isfinite(numbers)]
        if not len(numbers):
            raise BadInputError(f"{table_name}: regression target '{config.column}' has no numbers")
        return TargetState(
            column=config.column,
            task=cls.name,
            weight=config.weight,
            separator=config.separator,
            mean=float(numbers.mean()),
            std=float(numbers.std() or 1.0),
        )

    def encode(self, cells: list) -> tuple[np.ndarray, np.ndarray]:
        numbers = as_numbers(cells)
        known = np.isfinite(numbers)
        standard = np.where(known, (numbers - self.state.mean) / self.state.std, 0)
        return standard.astype(np.float32), known

    @property
    def outputs(self) -> int:
        return 1

    def loss(
        self, outputs: torch.Tensor, target: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        per_row = F.smooth_l1_loss(outputs[:, 0], target.float(), reduction="none")
        return mean_over_known(per_row, known)

    def decode(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        return {"value": outputs[:, 0] * self.state.std + self.state.mean}

    def combine(self, decoded: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {"value": np.mean([d["value"] for d in decoded], axis=0)}

    def columns(self, decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {f"{self.state.column}_predicted": decoded["value"]}

    def prediction(self, decoded: dict[str, np.ndarray], row: int) -> ValuePrediction:
        return ValuePrediction(predicted=float(decoded["value"][row]))

    def evaluate(self, true: np.ndarray, known: np.ndarray, decoded: dict) -> dict:
        if not known.any():
            return {"rows": 0}
        truth = true[known] * self.state.std + self.state.mean
        predicted = decoded["value"][known]
        return {
            "rows": len(truth),
            "rmse": float(np.sqrt(skm.mean_squared_error(truth, predicted))),
            "mae": float(skm.mean_absolute_error(truth, predicted)),
            "r2": float(skm.r2_score(truth, predicted)) if len(truth) > 1 else float("nan"),
        }

    def reference(self, decoded: dict[str, np.ndarray]) -> tuple[np.ndarray, list]:
        values = decoded["value"]
        return np.zeros(len(values), dtype=np.int64), [float(v) for v in values]

    def explained_value(self, decoded: dict[str, np.ndarray], reference: np.ndarray) -> np.ndarray:
        return decoded["value"]

    def attribution_output(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[:, 0]

    def attribution_index(self, reference: int) -> int | None:
        return None
