"""Per-row contributions of each input: exact Shapley values over inputs, by masking.

An input is removed the way a missing one is: its `present` flag is set to False, so the
network masks it. With n inputs every one of the 2^n subsets is evaluated in one batched
forward pass, which stays small for n ≤ 6 (64 subsets). The explained value is the
probability of the class predicted with every input (the value itself for regression).
"""

from __future__ import annotations

from math import factorial

import numpy as np
import torch

from polymodal.model import Model, decode_outputs

MAX_EXACT_INPUTS = 6
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


def shapley_weights(n: int) -> np.ndarray:
    """Weight of a subset of size s in player i's marginal sum: s! (n - s - 1)! / n!."""
    return np.array([factorial(s) * factorial(n - s - 1) / factorial(n) for s in range(n)])


def shapley(values: np.ndarray, n: int) -> np.ndarray:
    """values [2^n subsets, rows] → contributions [rows, n]."""
    weights = shapley_weights(n)
    sizes = np.array([bin(subset).count("1") for subset in range(2**n)])
    out = np.zeros((values.shape[1], n))
    for player in range(n):
        for subset in range(2**n):
            if not subset >> player & 1:
                gain = values[subset | 1 << player] - values[subset]
                out[:, player] += weights[sizes[subset]] * gain
    return out


def explain_rows(model: Model, features: dict) -> list[dict[str, dict]]:
    """For each row and target: predicted, value, base (all masked) and each input's share."""
    names = list(features)
    if len(names) > MAX_EXACT_INPUTS:
        raise TooManyInputs(
            f"exact explanations cover models with up to {MAX_EXACT_INPUTS} inputs; "
            f"this one has {len(names)}"
        )
    rows = len(features[names[0]]["present"])
    subsets = 2 ** len(names)
    outputs = model.forward(masked_copies(features, names))
    result: list[dict[str, dict]] = [{} for _ in range(rows)]
    for state in model.schema_.targets:
        decoded = decode_outputs(model.head(state.column), outputs[state.column])
        values, predicted, explained = explained_values(state, decoded, subsets, rows)
        contributions = shapley(values, len(names))
        for row in range(rows):
            result[row][state.column] = {
                "explained": explained,
                "predicted": predicted[row],
                "value": float(values[-1, row]),
                "base": float(values[0, row]),
                "contributions": dict(zip(names, map(float, contributions[row]), strict=True)),
            }
    return result


def explained_values(
    state: object, decoded: dict, subsets: int, rows: int
) -> tuple[np.ndarray, list, str]:
    """values [subsets, rows] of what is explained, the prediction per row, and its name."""
    if state.task == "regression":
        values = decoded["value"].reshape(subsets, rows)
        return values, [float(v) for v in values[-1]], f"predicted {state.column}"
    probabilities = decoded["probabilities"].reshape(subsets, rows, -1)
    chosen = probabilities[-1].argmax(axis=1)  # the class predicted with every input
    values = np.take_along_axis(probabilities, chosen[None, :, None], axis=2)[..., 0]
    labels = [str(state.classes[index]) for index in chosen]
    return values, labels, "probability of the predicted class"
