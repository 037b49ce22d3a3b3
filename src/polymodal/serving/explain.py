"""Per-row contributions of each input: exact Shapley values over inputs, by masking.

An input is removed the way a missing one is: its `present` flag is set to False, so the
network masks it. With n inputs every one of the 2^n subsets is evaluated in one batched
forward pass, which stays small for n ≤ 6 (64 subsets). The explained value is the
probability of the class predicted with every input (the value itself for regression).
"""

from __future__ import annotations

import numpy as np
import torch

from polymodal.explain.scoring import explained_value, predicted_classes
from polymodal.explain.shapley import EXACT_LIMIT, shapley_values
from polymodal.model import Model

METHOD = "exact Shapley values over inputs; an input is removed by masking it as missing"


class TooManyInputs(ValueError):
    """More inputs than exact Shapley values can afford (2^n forward passes per row)."""


def masked_copies(features: dict, names: list[str]) -> dict:
    """Each row repeated once per subset of inputs (subset-major), absent inputs masked."""
    subsets = 2 ** len(names)
    out = {}
    for bit, name in enumerate(names):
        item = features[name]
        keep = torch.tensor([(subset >> bit) & 1 == 1 for subset in range(subsets)])
        copies = {
            key: value.repeat(subsets, *[1] * (value.dim() - 1)) for key, value in item.items()
        }
        copies["present"] = (keep[:, None] & item["present"][None, :]).reshape(-1)
        out[name] = copies
    return out


def explain_rows(model: Model, features: dict) -> list[dict[str, dict]]:
    """For each row and target: predicted, value, base (all masked) and each input's share.

    Every subset goes through the network in one batched forward pass; the Shapley arithmetic
    and the explained value are `polymodal.explain`'s, as for `polymodal explain`."""
    names = list(features)
    if len(names) > EXACT_LIMIT:
        raise TooManyInputs(
            f"exact explanations cover models with up to {EXACT_LIMIT} inputs; "
            f"this one has {len(names)}"
        )
    rows = len(features[names[0]]["present"])
    subsets = 2 ** len(names)
    outputs = model.forward(masked_copies(features, names))
    subset_of = {
        frozenset(name for bit, name in enumerate(names) if subset >> bit & 1): subset
        for subset in range(subsets)
    }
    result: list[dict[str, dict]] = [{} for _ in range(rows)]
    for state in model.schema_.targets:
        target = state.column
        blocks = outputs[target].reshape(subsets, rows, *outputs[target].shape[1:])
        classes, predicted = predicted_classes(model, target, blocks[-1])  # with every input
        values = np.stack([explained_value(model, target, block, classes) for block in blocks])
        contributions, _ = shapley_values(names, lambda keep, v=values: v[subset_of[keep]])
        explained = model.task(target).explained
        for row in range(rows):
            result[row][target] = {
                "explained": explained,
                "predicted": predicted[row],
                "value": float(values[-1, row]),
                "base": float(values[0, row]),
                "contributions": {
                    name: float(contributions[i, row]) for i, name in enumerate(names)
                },
            }
    return result
