"""Multi-label targets: any number of labels per row (cells like `a|b`, or lists); one
independent logit per label."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from sklearn import metrics as skm
from torch.nn import functional as F

from polymodal.data.column import is_missing
from polymodal.tasks.base import TargetPrediction, mean_over_known, register_task
from polymodal.tasks.classes import LabelTask

THRESHOLD = 0.5


class LabelsPrediction(TargetPrediction):
    predicted: list[str]
    probabilities: dict[str, float]


@register_task
class MultilabelTask(LabelTask):
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
    def cell_labels(cls, value: object, separator: str) -> list[str]:
        if isinstance(value, list | tuple | np.ndarray):
            return [str(v).strip() for v in value if str(v).strip()]
        return [part.strip() for part in str(value).split(separator) if part.strip()]

    def encode(self, cells: list) -> tuple[np.ndarray, np.ndarray]:
        """Multi-hot rows; labels the model never saw are left out."""
        lookup = {name: i for i, name in enumerate(self.state.classes)}
        known = np.array([not is_missing(v) for v in cells], dtype=bool)
        hot = np.zeros((len(cells), len(self.state.classes)), dtype=np.float32)
        for row, cell in enumerate(cells):
            if known[row]:
                for label in self.cell_labels(cell, self.state.separator):
                    if label in lookup:
                        hot[row, lookup[label]] = 1.0
        return hot, known

    def loss(
        self, outputs: torch.Tensor, target: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        per_row = F.binary_cross_entropy_with_logits(outputs, target.float(), reduction="none")
        return mean_over_known(per_row.mean(dim=-1), known)

    def label_probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(outputs.float())

    def from_probabilities(self, probabilities: np.ndarray) -> dict[str, np.ndarray]:
        labels = (probabilities > THRESHOLD).astype(np.float32)
        return {"labels": labels, "probabilities": probabilities}

    def chosen(self, labels_row: np.ndarray) -> list[str]:
        return [name for name, on in zip(self.state.classes, labels_row, strict=True) if on]

    def columns(self, decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        joined = [self.state.separator.join(self.chosen(row)) for row in decoded["labels"]]
        predicted = {f"{self.state.column}_predicted": np.asarray(joined, dtype=object)}
        return predicted | self.probability_columns(decoded)

    def prediction(self, decoded: dict[str, np.ndarray], row: int) -> LabelsPrediction:
        return LabelsPrediction(
            predicted=self.chosen(decoded["labels"][row]),
            probabilities=self.row_probabilities(decoded, row),
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
