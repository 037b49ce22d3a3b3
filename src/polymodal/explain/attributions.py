"""Attributions inside each input with Captum, for one row and its predicted class.

Continuous inputs (image pixels, log-mel bins, video frames, numbers) use Integrated
Gradients from a baseline of zeros, which after the model's normalisation is the training
mean: "how much does this pixel's departure from an average image move the prediction".
Token ids are discrete, so text and categories use Layer Integrated Gradients on their
embedding, from the embedding of padding (text) or of "missing" (categories). Attributions
are always taken in eval mode, with every other input of the row held fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients
from torch import nn

from polymodal.encoders.base import EncodedInput
from polymodal.explain.runner import Runner
from polymodal.explain.scoring import Features, take_rows
from polymodal.modalities import modality
from polymodal.model import Model

STEPS = 64  # with ReLU networks 32 left completeness errors near 0.1; 64 stays under 0.01


@dataclass
class InputAttribution:
    """One input of one row: attributions shaped like the input's features (no batch axis),
    the features themselves (for drawing) and a JSON summary."""

    input: str
    kind: str
    attributions: np.ndarray
    values: np.ndarray
    length: int | None = None  # real frames or tokens, for audio and text
    summary: dict = field(default_factory=dict)


def row_forward(runner: Runner, name: str, target: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(values of `name` for a batch of interpolation steps) → the target's scores per
    step: class probabilities, or the standardised value for regression. The row's other
    inputs are encoded once and repeated for every step."""
    task = runner.model.task(target)

    def forward(values: torch.Tensor) -> torch.Tensor:
        encoded = row_encoded_with(runner, name, values)
        return task.attribution_output(runner.heads(encoded)[target])

    return forward


def row_encoded_with(runner: Runner, name: str, values: torch.Tensor) -> dict[str, EncodedInput]:
    """The runner's one row, encoded once per step of `values` [steps, ...]: every other input's
    cached encoding repeated, and `name` encoded from `values` (its other feature items, such as
    `present` or `lengths`, repeated alongside)."""
    steps = values.shape[0]
    encoded = {
        other: EncodedInput(item.tokens.expand(steps, -1, -1), item.mask.expand(steps, -1))
        for other, item in runner.encoded[0].items()
    }
    row = runner.features[name]
    item = {key: tensor.expand(steps, *tensor.shape[1:]) for key, tensor in row.items()}
    encoded[name] = runner.encode_one(name, {**item, "values": values})
    return encoded


def embedding_layer(encoder: nn.Module) -> nn.Embedding:
    """The encoder's token embedding (the first `nn.Embedding` inside it)."""
    for module in encoder.modules():
        if isinstance(module, nn.Embedding):
            return module
    raise TypeError(f"{type(encoder).__name__} has no embedding to attribute through")


def attribute_input(runner: Runner, name: str, target: str, label: int | None) -> InputAttribution:
    """Captum attributions of one input of a one-row runner, w.r.t. class `label`."""
    kind = runner.net.input_kinds[name]
    forward = row_forward(runner, name, target)
    row = runner.features
    values = row[name]["values"]
    with torch.enable_grad():
        if modality(kind).embedded:  # ids: attribute at the embedding
            layer = embedding_layer(runner.encoder(name))
            method = LayerIntegratedGradients(forward, layer)
            scores = method.attribute(
                values.long(), baselines=torch.zeros_like(values.long()), target=label,
                n_steps=STEPS, internal_batch_size=STEPS,
            )  # fmt: skip
            scores = scores.sum(dim=-1)  # one number per token
        else:
            inputs = values.float()
            method = IntegratedGradients(forward)
            scores = method.attribute(
                inputs, baselines=torch.zeros_like(inputs), target=label,
                n_steps=STEPS, internal_batch_size=STEPS,
            )  # fmt: skip
    return InputAttribution(
        input=name,
        kind=kind,
        attributions=scores.detach()[0].float().numpy(),
        values=values[0].float().numpy(),
        length=first_length(row[name]),
    )


def first_length(item: dict) -> int | None:
    """The first row's real frames or tokens, for inputs that record them (audio, text)."""
    return int(item["lengths"][0]) if "lengths" in item else None


def attribute_row(
    model: Model, features: Features, row: int, target: str, label: int | None
) -> list[InputAttribution]:
    """Every input present in `row`, attributed w.r.t. the predicted class `label`."""
    runner = Runner(model, take_rows(features, np.array([row])))
    return [
        attribute_input(runner, name, target, label)
        for name in model.net_.input_names
        if bool(runner.features[name]["present"][0])
    ]
