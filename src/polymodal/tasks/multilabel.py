"""Multi-label targets: any number of labels per row (cells like `a|b`, or lists); one
independent logit per label."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm
from torch.nn import functional as F

from polymodal.config import TargetConfig
from polymodal.data.column import is_missing
from polymodal.tasks.base import TargetPrediction, TargetState, Task, mean_over_known, register_task
from polymodal.tasks.classes import check_two_classes

THRESHOLD = 0.5


class LabelsPrediction(TargetPrediction):
    predicted: list[str]
    probabilities: dict[str, float]


def cell_labels(value: object, separator: str) -> list[str]:
    if isinstance(value, list | tuple | np.ndarray):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(separator) if part.strip()]


@register_task
class MultilabelTask(Task):
    name = "multilabel"
    metrics: ClassVar[dict[str, bool]] = {
        "micro_f1": True,
        "macro_f1": True,
        "subset_accuracy": True,
    }
    score_metric = "micro_f1"
    inference_order = 0
    explained = "probability of the most probable label"

    @classmethod
    def claims(cls, values: list) -> bool:
        return bool(values) and isinstance(values[0], list | tuple)

    @classmethod
    def fit(cls, values: list, config: TargetConfig, table_name: str) -> TargetState:
        classes = sorted({label for v in values for label in cell_labels(v, config.separator)})
        check_two_classes(classes, config.column, table_name)
        return TargetState(
            column=config.column,
            task=cls.name,
            weight=config.weight,
            separator=config.separator,
            classes=classes,
        )

    def encode(self, cells: list) -> tuple[np.ndarray, np.ndarray]:
        """Multi-hot rows; labels the model never saw are left out."""
        lookup = {name: i for i, name in enumerate(self.state.classes)}
        known = np.array([not is_missing(v) for v in cells], dtype=bool)
        hot = np.zeros((len(cells), len(self.state.classes)), dtype=np.float32)
        for row, cell in enumerate(cells):
            if known[row]:
                for label in cell_labels(cell, self.state.separator):
                    if label in lookup:
                        hot[row, lookup[label]] = 1.0
        return hot, known

    @property
    def outputs(self) -> int:
        return len(self.state.classes)

    def loss(
        self, outputs: torch.Tensor, target: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        per_row = F.binary_cross_entropy_with_logits(outputs, target.float(), reduction="none")
        return mean_over_known(per_row.mean(dim=-1), known)

    def decode(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        return self.from_probabilities(torch.sigmoid(torch.from_numpy(outputs).float()).numpy())

    def from_probabilities(self, probabilities: np.ndarray) -> dict[str, np.ndarray]:
        labels = (probabilities > THRESHOLD).astype(np.float32)
        return {"labels": labels, "probabilities": probabilities}

    def combine(self, decoded: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return self.from_probabilities(np.mean([d["probabilities"] for d in decoded], axis=0))

    def chosen(self, labels_row: np.ndarray) -> list[str]:
        return [name for name, on in zip(self.state.classes, labels_row, strict=True) if on]

    def columns(self, decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        name = self.state.column
        joined = [self.state.separator.join(self.chosen(row)) for row in decoded["labels"]]
        columns = {f"{name}_predicted": np.asarray(joined, dtype=object)}
        for index, label in enumerate(self.state.classes):
            columns[f"{name}_prob_{label}"] = decoded["probabilities"][:, index]
        return columns

    def probabilities(self, decoded: dict[str, np.ndarray]) -> pd.DataFrame:
        return pd.DataFrame(decoded["probabilities"], columns=self.state.classes)

    def prediction(self, decoded: dict[str, np.ndarray], row: int) -> LabelsPrediction:
        probabilities = map(float, decoded["probabilities"][row])
        return LabelsPrediction(
            predicted=self.chosen(decoded["labels"][row]),
            probabilities=dict(zip(self.state.classes, probabilities, strict=True)),
        )

    def evaluate(self, true: np.ndarray, known: np.ndarray, decoded: dict) -> dict:
        if not known.any():
            return {"rows": 0}
        truth, predicted = true[known], decoded["labels"][known]
        return {
            "rows": int(known.sum()),
            "micro_f1": float(skm.f1_score(truth, predicted, average="micro", zero_division=0)),
            "macro_f1": float(skm.f1_score(truth, predicted, average="macro", zero_division=0)),
            "subset_accuracy": float(skm.accuracy_score(truth, predicted)),
            "classes": self.state.classes,
        }

    def reference(self, decoded: dict[str, np.ndarray]) -> tuple[np.ndarray, list]:
        chosen = decoded["probabilities"].argmax(axis=1)
        return chosen, [str(self.state.classes[i]) for i in chosen]

    def explained_value(self, decoded: dict[str, np.ndarray], reference: np.ndarray) -> np.ndarray:
        return decoded["probabilities"][np.arange(len(reference)), reference]

    def attribution_output(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(outputs.float())
