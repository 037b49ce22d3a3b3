"""`explain`: modality contributions for a table plus Captum attributions for chosen rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from polymodal.data.problems import BadInputError
from polymodal.data.table import read_table
from polymodal.explain.attributions import InputAttribution, attribute_row
from polymodal.explain.scoring import predicted_classes, truths
from polymodal.explain.shapley import ModalityContributions, modality_contributions
from polymodal.explain.summaries import summarise
from polymodal.model import DataLike, Model


@dataclass
class RowExplanation:
    row: int
    prediction: str | float
    value: float  # probability of the predicted class, or the predicted value
    contributions: dict[str, float]  # Shapley share of `value` − value with no input
    attributions: list[InputAttribution] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "row": self.row,
            "prediction": self.prediction,
            "value": self.value,
            "contributions": self.contributions,
            "attributions": {
                item.input: {"kind": item.kind, **item.summary} for item in self.attributions
            },
        }


@dataclass
class Explanation:
    target: str
    contributions: ModalityContributions
    rows: list[RowExplanation]

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "contributions": self.contributions.to_json(),
            "rows": [row.to_json() for row in self.rows],
        }


def check_rows(rows: list[int] | np.ndarray | None, total: int) -> np.ndarray:
    if rows is None:
        return np.arange(total)
    chosen = np.asarray(list(rows), dtype=np.int64)
    bad = chosen[(chosen < 0) | (chosen >= total)]
    if bad.size:
        raise BadInputError(
            f"row {int(bad[0])} is out of range: the table has {total} rows (0-based)"
        )
    return chosen


def explain(
    model: Model,
    data: DataLike,
    rows: list[int] | np.ndarray | None = None,
    *,
    target: str | None = None,
    attributions: bool = True,
    seed: int = 0,
) -> Explanation:
    """Contributions of each input to the metric (over every row with a known target) and to
    each chosen row's prediction, and, if `attributions`, Captum attributions inside each
    input of the chosen rows (every row when `rows` is None)."""
    target = model.task(target).state.column
    table = read_table(data)
    features = model.encode(table)
    chosen = check_rows(rows, len(table))
    truth = truths(model, table).get(target)
    contributions = modality_contributions(model, features, target, truth, chosen, seed=seed)
    outputs = model.forward(features, chosen)[target]
    references, _ = predicted_classes(model, target, outputs)
    task = model.task(target)
    attributions = attributions and task.attributable
    explained = []
    for index, row in enumerate(chosen):
        entry = RowExplanation(
            row=int(row),
            prediction=contributions.predictions[index],
            value=float(contributions.row_all[index]),
            contributions=contributions.row_contributions[index],
        )
        if attributions:
            label = task.attribution_index(references[index])
            entry.attributions = attribute_row(model, features, int(row), target, label)
            for item in entry.attributions:
                item.summary = summarise(model, item)
        explained.append(entry)
    return Explanation(target=target, contributions=contributions, rows=explained)
