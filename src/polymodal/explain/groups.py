"""Per-group metrics (`--group-by COL`): does the model serve every group equally well?

A column with few distinct values is grouped by value; a numeric column with many is cut
into quantile bins. Missing cells form their own group, since they are often the group a
model serves worst.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from polymodal.data.features import raise_missing_column
from polymodal.data.table import read_table
from polymodal.explain.scoring import Truth, metric_name, score, truths
from polymodal.model import DataLike, Model

MAX_GROUPS = 20
BINS = 4
MISSING = "(missing)"


def group_labels(series: pd.Series) -> pd.Series:
    """One label per row: the value, a quantile bin for many-valued numbers, or (missing)."""
    numbers = pd.to_numeric(series, errors="coerce")
    many = series.nunique(dropna=True) > MAX_GROUPS
    if many and numbers.notna().sum() >= 0.95 * series.notna().sum():
        bins = pd.qcut(numbers, BINS, duplicates="drop")
        labels = bins.astype(str)
    else:
        labels = series.map(lambda value: str(value).strip())
    return labels.where(series.notna() & (series.astype(str).str.strip() != ""), MISSING)


def group_metrics(
    model: Model, data: DataLike, column: str, outputs: dict | None = None
) -> dict[str, dict]:
    """`{target: {"column", "metric", "groups": [{"group", "rows", "score"}], "gap"}}`.

    `gap` is the largest difference between two groups' scores (best − worst), naming them;
    groups without a known target are listed with a score of None and left out of the gap.
    """
    table = read_table(data)
    if column not in table.frame.columns:
        raise_missing_column(table, column, "group-by")
    labels = group_labels(table.frame[column]).to_numpy()
    outputs = outputs if outputs is not None else model.raw_outputs(table)
    report = {}
    for target, truth in truths(model, table).items():
        groups = []
        for label in sorted(set(labels), key=str):
            member = labels == label
            part = Truth(truth.values, truth.known & member)
            value = score(model, target, outputs[target], part) if part.known.any() else None
            groups.append({"group": label, "rows": int(member.sum()), "score": value})
        report[target] = {
            "column": column,
            "metric": metric_name(model, target),
            "groups": groups,
            "gap": largest_gap(groups),
        }
    return report


def largest_gap(groups: list[dict]) -> dict | None:
    scored = [g for g in groups if g["score"] is not None and not np.isnan(g["score"])]
    if len(scored) < 2:
        return None
    best = max(scored, key=lambda g: g["score"])
    worst = min(scored, key=lambda g: g["score"])
    return {"value": best["score"] - worst["score"], "best": best["group"], "worst": worst["group"]}
