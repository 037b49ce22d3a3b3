"""Modality contributions: Shapley values over a model's inputs, computed by masking.

A coalition S of inputs is scored by running the model with every input outside S marked
absent, the same masking the model learned for missing files and empty cells, so nothing is
replaced by made-up data (`Runner` encodes each input once and clears the masks). With n ≤ 6 inputs all 2^n coalitions are evaluated and the values
are exact; beyond that, seeded random permutations estimate them (each permutation still
adds up to v(all) − v(none), so the estimates do too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from math import factorial

import numpy as np

from polymodal.explain.runner import Runner
from polymodal.explain.scoring import (
    Features,
    Truth,
    explained_value,
    metric_name,
    predicted_classes,
    score,
    take_rows,
)
from polymodal.model import Model

EXACT_LIMIT = 6
PERMUTATIONS = 128
Value = Callable[[frozenset[str]], np.ndarray]


def shapley_values(
    players: list[str],
    value: Value,
    *,
    exact_limit: int = EXACT_LIMIT,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> tuple[np.ndarray, bool]:
    """(values [players, *value shape], exact). `value` may return an array (e.g. one number
    per row); coalitions are evaluated once each."""
    memo: dict[frozenset[str], np.ndarray] = {}

    def v(coalition: frozenset[str]) -> np.ndarray:
        if coalition not in memo:
            memo[coalition] = np.asarray(value(coalition), dtype=np.float64)
        return memo[coalition]

    n = len(players)
    shape = v(frozenset()).shape
    phi = np.zeros((n, *shape))
    if n <= exact_limit:
        for i, player in enumerate(players):
            others = players[:i] + players[i + 1 :]
            for size in range(n):
                weight = factorial(size) * factorial(n - size - 1) / factorial(n)
                for subset in combinations(others, size):
                    base = frozenset(subset)
                    phi[i] += weight * (v(base | {player}) - v(base))
        return phi, True
    rng = np.random.default_rng(seed)
    for _ in range(permutations):
        coalition: frozenset[str] = frozenset()
        for i in rng.permutation(n):
            grown = coalition | {players[i]}
            phi[i] += v(grown) - v(coalition)
            coalition = grown
    return phi / permutations, False


@dataclass
class ModalityContributions:
    """Per input: its share of the metric (global) and of each row's prediction."""

    target: str
    inputs: list[str]
    exact: bool
    metric: str | None = None  # None when the table has no known target
    metric_all: float | None = None
    metric_none: float | None = None
    metric_contributions: dict[str, float] = field(default_factory=dict)
    rows: list[int] = field(default_factory=list)
    predictions: list = field(default_factory=list)
    row_all: list[float] = field(default_factory=list)  # explained value with every input
    row_none: list[float] = field(default_factory=list)  # ... and with none
    row_contributions: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(vars(self))


def modality_contributions(
    model: Model,
    features: Features,
    target: str,
    truth: Truth | None,
    rows: np.ndarray,
    *,
    seed: int = 0,
) -> ModalityContributions:
    """Shapley values of the inputs for the metric over every row with a known target (when
    `truth` is given) and for the predicted class probability of each of `rows`."""
    inputs = list(model.net_.input_names)
    has_metric = truth is not None and bool(truth.known.any())
    total = len(next(iter(features.values()))["present"])
    scored = np.arange(total) if has_metric else np.asarray(rows)  # rows the model must see
    position = np.asarray(rows) if has_metric else np.arange(len(rows))
    runner = Runner(model, take_rows(features, scored))
    classes, predictions = predicted_classes(model, target, runner.outputs()[target][position])
    cache: dict[frozenset[str], np.ndarray] = {}

    def value(coalition: frozenset[str]) -> np.ndarray:
        if coalition not in cache:
            outputs = runner.outputs(keep=coalition)[target]
            per_row = explained_value(model, target, outputs[position], classes)
            metric = [score(model, target, outputs, truth)] if has_metric else []
            cache[coalition] = np.concatenate([metric, per_row])
        return cache[coalition]

    phi, exact = shapley_values(inputs, value, seed=seed)
    every, none = value(frozenset(inputs)), value(frozenset())
    offset = 1 if has_metric else 0
    result = ModalityContributions(
        target=target,
        inputs=inputs,
        exact=exact,
        rows=[int(r) for r in rows],
        predictions=predictions,
        row_all=every[offset:].tolist(),
        row_none=none[offset:].tolist(),
        row_contributions=[
            {name: float(phi[i, offset + r]) for i, name in enumerate(inputs)}
            for r in range(len(rows))
        ],
    )
    if has_metric:
        result.metric = metric_name(model, target)
        result.metric_all, result.metric_none = float(every[0]), float(none[0])
        result.metric_contributions = {name: float(phi[i, 0]) for i, name in enumerate(inputs)}
    return result
