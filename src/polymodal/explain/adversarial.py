"""Adversarial robustness: FGSM and PGD (L∞) on one continuous input at a time.

The attacker raises the target's own training loss by changing one input within ±ε of
its clean features, every other input held fixed. ε is in the units a user would read:
pixels on the 0–1 scale for images and video (so 8/255 means what it usually means), and
standard deviations of the normalised features for audio log-mel bins and numbers. Only
real content is attacked: padded audio frames stay as they are.
"""

from __future__ import annotations

import torch

from polymodal.explain.runner import Runner
from polymodal.explain.scoring import Truth, score
from polymodal.modalities import modality
from polymodal.model import Model

PGD_STEPS = 10


def attackable(kind: str) -> bool:
    """Continuous features only (images, audio, video, numbers): ids cannot move by ε."""
    return modality(kind).continuous


def epsilons_for(kind: str) -> tuple[list[float], str]:
    """The ε levels and their unit, as the modality reads them."""
    return modality(kind).epsilons()


def feature_scale(model: Model, name: str) -> torch.Tensor:
    """How many feature units one unit of ε is (pixels are divided by the channel std)."""
    state = model.schema_.input(name)
    return modality(state.kind).attack_scale(state)


def editable(item: dict) -> torch.Tensor:
    """1 where the attacker may change a feature: real audio frames; everything otherwise."""
    values = item["values"]
    if values.ndim == 3 and "lengths" in item:
        frames = torch.arange(values.shape[-1])[None, None, :]
        return (frames < item["lengths"][:, None, None]).float()
    return torch.ones_like(values, dtype=torch.float32)


def loss_gradient(
    runner: Runner, chunk: int, name: str, target: str, x: torch.Tensor, truth: tuple
) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    outputs = runner.forward_with(chunk, name, x, {target: truth})[target]
    loss = runner.model.task(target).loss(outputs, *truth)
    (gradient,) = torch.autograd.grad(loss, x)
    return gradient


def attack_chunk(
    runner: Runner, chunk: int, name: str, target: str, truth: tuple,
    radius: torch.Tensor, method: str, generator: torch.Generator,
) -> torch.Tensor:  # fmt: skip
    """Adversarial values of `name` for one batch; `radius` is ε in feature units per entry."""
    clean = runner.features[name]["values"][runner.chunks[chunk]].float()

    def gradient(x: torch.Tensor) -> torch.Tensor:
        return loss_gradient(runner, chunk, name, target, x, truth)

    if method == "fgsm":
        return clean + radius * gradient(clean).sign()
    step = 2.5 * radius / PGD_STEPS
    x = clean + (torch.rand(clean.shape, generator=generator) * 2 - 1) * radius
    for _ in range(PGD_STEPS):
        x = x + step * gradient(x).sign()
        x = torch.max(torch.min(x, clean + radius), clean - radius)
    return x


def attack_score(
    runner: Runner, name: str, target: str, truth: Truth, epsilon: float, method: str,
    seed: int = 0,
) -> float:  # fmt: skip
    """The target's score when `name` is attacked with `method` ("fgsm" or "pgd") at ε.
    Rows without a known target add nothing to the loss, so they are left unchanged."""
    model = runner.model
    values, known = torch.from_numpy(truth.values), torch.from_numpy(truth.known)
    generator = torch.Generator().manual_seed(seed)
    item = runner.features[name]
    attacked = item["values"].float().clone()
    scale = feature_scale(model, name)
    with torch.enable_grad():
        for chunk, index in enumerate(runner.chunks):
            if not known[index].any():
                continue
            radius = epsilon * scale * editable({k: v[index] for k, v in item.items()})
            truth_chunk = (values[index], known[index])
            found = attack_chunk(
                runner, chunk, name, target, truth_chunk, radius, method, generator
            )
            attacked[index] = found.detach()
    outputs = runner.outputs(replace={name: {"values": attacked}})[target]
    return score(model, target, outputs, truth)
