"""What the tasks over named labels share (multiclass and binary: one label per row;
multilabel: any number): a label list learned from the training rows, outputs decoded to
probabilities over it, ensembles that average them, explanations of the most probable label,
and a probability column per label."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm

from polymodal.config import TargetConfig
from polymodal.data.column import category_text, is_missing
from polymodal.data.problems import BadInputError
from polymodal.tasks.base import TargetPrediction, TargetState, Task, nearly_unique


class ClassPrediction(TargetPrediction):
    predicted: str
    probabilities: dict[str, float]


class LabelTask(Task):
    """Outputs are probabilities over `state.classes`; subclasses say which labels a cell
    names, how outputs become probabilities and probabilities become predictions."""

    @classmethod
    def cell_labels(cls, value: object, separator: str) -> list[str]:
        raise NotImplementedError

    @classmethod
    def fit(cls, values: list, config: TargetConfig, table_name: str) -> TargetState:
        labels = {label for v in values for label in cls.cell_labels(v, config.separator)}
        if len(labels) < 2:
            found = f"one class ({sorted(labels)[0]!r})" if labels else "no labels"
            raise BadInputError(
                f"{table_name}: target '{config.column}' has {found}; "
                "a classifier needs at least two"
            )
        return TargetState(
            column=config.column,
            task=cls.name,
            weight=config.weight,
            separator=config.separator,
            classes=sorted(labels),
        )

    @property
    def outputs(self) -> int:
        return len(self.state.classes)

    def label_probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def from_probabilities(self, probabilities: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def decode(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        probabilities = self.label_probabilities(torch.from_numpy(outputs)).numpy()
        return self.from_probabilities(probabilities)

    def combine(self, decoded: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return self.from_probabilities(np.mean([d["probabilities"] for d in decoded], axis=0))

    def probability_columns(self, decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            f"{self.state.column}_prob_{label}": decoded["probabilities"][:, index]
            for index, label in enumerate(self.state.classes)
        }

    def probabilities(self, decoded: dict[str, np.ndarray]) -> pd.DataFrame:
        return pd.DataFrame(decoded["probabilities"], columns=self.state.classes)

    def row_probabilities(self, decoded: dict[str, np.ndarray], row: int) -> dict[str, float]:
        values = map(float, decoded["probabilities"][row])
        return dict(zip(self.state.classes, values, strict=True))

    def reference(self, decoded: dict[str, np.ndarray]) -> tuple[np.ndarray, list]:
        chosen = decoded["probabilities"].argmax(axis=1)
        return chosen, [str(self.state.classes[i]) for i in chosen]

    def explained_value(self, decoded: dict[str, np.ndarray], reference: np.ndarray) -> np.ndarray:
        return decoded["probabilities"][np.arange(len(reference)), reference]

    def attribution_output(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.label_probabilities(outputs)


class ClassTask(LabelTask):
    """One label per row: the most probable class is the prediction."""

    metrics: ClassVar[dict[str, bool]] = {"accuracy": True, "macro_f1": True, "weighted_f1": True}
    score_metric = "accuracy"
    explained = "probability of the predicted class"

    @classmethod
    def cell_labels(cls, value: object, separator: str) -> list[str]:
        return [category_text(value)]

    @classmethod
    def fit(cls, values: list, config: TargetConfig, table_name: str) -> TargetState:
        if nearly_unique(values):
            distinct = len({category_text(v) for v in values})
            raise BadInputError(
                f"{table_name}: target '{config.column}' has {distinct} distinct values in "
                f"{len(values)} rows: as {cls.name} classes most would be seen once and "
                "valid/test rows could not be scored; use task: text to generate it"
            )
        return super().fit(values, config, table_name)

    def encode(self, cells: list) -> tuple[np.ndarray, np.ndarray]:
        """Class indices; a label the model never saw is not known (it adds no loss)."""
        lookup = {name: i for i, name in enumerate(self.state.classes)}
        indices = np.array(
            [-1 if is_missing(v) else lookup.get(category_text(v), -1) for v in cells]
        )
        return np.maximum(indices, 0).astype(np.int64), indices >= 0

    def from_probabilities(self, probabilities: np.ndarray) -> dict[str, np.ndarray]:
        names = np.asarray(self.state.classes, dtype=object)
        return {"label": names[probabilities.argmax(axis=1)], "probabilities": probabilities}

    def columns(self, decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        predicted = {f"{self.state.column}_predicted": decoded["label"]}
        return predicted | self.probability_columns(decoded)

    def prediction(self, decoded: dict[str, np.ndarray], row: int) -> ClassPrediction:
        return ClassPrediction(
            predicted=str(decoded["label"][row]),
            probabilities=self.row_probabilities(decoded, row),
        )

    def score(self, true: np.ndarray, known: np.ndarray, decoded: dict) -> float:
        """Accuracy, as `evaluate` gives it, without sklearn's checks of its arguments: this
        runs after every epoch, where they cost a tenth of a second per ten epochs."""
        if not known.any():
            return float("nan")
        classes = np.asarray(self.state.classes)
        return float(np.mean(classes[true[known]] == decoded["label"][known]))

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
