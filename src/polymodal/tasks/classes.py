"""What the single-label class tasks (multiclass, binary) share: a label map learned from the
training rows, decoding to the most probable class, and class metrics."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm

from polymodal.config import TargetConfig
from polymodal.data.column import category_text, is_missing
from polymodal.data.problems import BadInputError
from polymodal.tasks.base import TargetPrediction, TargetState, Task


class ClassPrediction(TargetPrediction):
    predicted: str
    probabilities: dict[str, float]


def check_two_classes(classes: list[str], column: str, table_name: str) -> None:
    if len(classes) < 2:
        raise BadInputError(
            f"{table_name}: target '{column}' has one class ({classes[0]!r}); "
            "a classifier needs at least two"
        )


class ClassTask(Task):
    """One label per row; subclasses say how outputs become probabilities."""

    metrics: ClassVar[dict[str, bool]] = {"accuracy": True, "macro_f1": True, "weighted_f1": True}
    score_metric = "accuracy"
    explained = "probability of the predicted class"

    @classmethod
    def fit(cls, values: list, config: TargetConfig, table_name: str) -> TargetState:
        classes = sorted({category_text(v) for v in values})
        check_two_classes(classes, config.column, table_name)
        return TargetState(
            column=config.column,
            task=cls.name,
            weight=config.weight,
            separator=config.separator,
            classes=classes,
        )

    def encode(self, cells: list) -> tuple[np.ndarray, np.ndarray]:
        """Class indices; a label the model never saw is not known (it adds no loss)."""
        lookup = {name: i for i, name in enumerate(self.state.classes)}
        indices = np.array(
            [-1 if is_missing(v) else lookup.get(category_text(v), -1) for v in cells]
        )
        return np.maximum(indices, 0).astype(np.int64), indices >= 0

    def class_probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        probabilities = self.class_probabilities(torch.from_numpy(outputs)).numpy()
        return self.from_probabilities(probabilities)

    def from_probabilities(self, probabilities: np.ndarray) -> dict[str, np.ndarray]:
        names = np.asarray(self.state.classes, dtype=object)
        return {"label": names[probabilities.argmax(axis=1)], "probabilities": probabilities}

    def combine(self, decoded: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return self.from_probabilities(np.mean([d["probabilities"] for d in decoded], axis=0))

    def columns(self, decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        name = self.state.column
        columns = {f"{name}_predicted": decoded["label"]}
        for index, label in enumerate(self.state.classes):
            columns[f"{name}_prob_{label}"] = decoded["probabilities"][:, index]
        return columns

    def probabilities(self, decoded: dict[str, np.ndarray]) -> pd.DataFrame:
        return pd.DataFrame(decoded["probabilities"], columns=self.state.classes)

    def prediction(self, decoded: dict[str, np.ndarray], row: int) -> ClassPrediction:
        probabilities = map(float, decoded["probabilities"][row])
        return ClassPrediction(
            predicted=str(decoded["label"][row]),
            probabilities=dict(zip(self.state.classes, probabilities, strict=True)),
        )

    def evaluate(self, true: np.ndarray, known: np.ndarray, decoded: dict) -> dict:
        if not known.any():
            return {"rows": 0}
        classes = self.state.classes
        truth = list(np.asarray(classes)[true[known]])
        predicted = list(decoded["label"][known])
        return {
            "rows": len(truth),
            "accuracy": float(skm.accuracy_score(truth, predicted)),
            "macro_f1": float(
                skm.f1_score(truth, predicted, average="macro", labels=classes, zero_division=0)
            ),
            "weighted_f1": float(
                skm.f1_score(truth, predicted, average="weighted", labels=classes, zero_division=0)
            ),
            "classes": classes,
            "confusion_matrix": skm.confusion_matrix(truth, predicted, labels=classes).tolist(),
        }

    def reference(self, decoded: dict[str, np.ndarray]) -> tuple[np.ndarray, list]:
        chosen = decoded["probabilities"].argmax(axis=1)
        return chosen, [str(self.state.classes[i]) for i in chosen]

    def explained_value(self, decoded: dict[str, np.ndarray], reference: np.ndarray) -> np.ndarray:
        return decoded["probabilities"][np.arange(len(reference)), reference]

    def attribution_output(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.class_probabilities(outputs)
