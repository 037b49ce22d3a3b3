"""The report's charts, each a self-contained <img> (PNG inline as base64)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from polymodal.evaluation.plots import figure_tag  # noqa: E402


def training_curves(history: list[dict]) -> str | None:
    """Losses and the validation score per epoch, from metrics.json."""
    if not history:
        return None
    epochs = [row["epoch"] for row in history]
    fig, (losses, score) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, style in (("train_loss", "-o"), ("val_loss", "-s")):
        points = [(e, row[key]) for e, row in zip(epochs, history, strict=True) if key in row]
        if points:
            losses.plot(*zip(*points, strict=True), style, label=key.replace("_", " "))
    losses.set_xlabel("epoch")
    losses.set_ylabel("loss")
    losses.legend()
    points = [
        (e, row["val_score"]) for e, row in zip(epochs, history, strict=True) if "val_score" in row
    ]
    if points:
        score.plot(*zip(*points, strict=True), "-o", color="#2f6db5")
    score.set_xlabel("epoch")
    score.set_ylabel("validation score")
    return figure_tag(fig, "training curves")


def confusion_matrix(classes: list[str], matrix: list[list[int]], title: str) -> str:
    counts = np.asarray(matrix)
    side = 1.2 + 0.45 * len(classes)
    fig, axis = plt.subplots(figsize=(side + 1, side))
    shown = axis.imshow(counts, cmap="Blues")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(len(classes)), classes, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(classes) <= 15:
        for (i, j), value in np.ndenumerate(counts):
            colour = "white" if value > counts.max() / 2 else "black"
            axis.text(j, i, str(value), ha="center", va="center", fontsize=8, color=colour)
    fig.colorbar(shown, ax=axis, fraction=0.04)
    axis.set_title(title, fontsize=10)
    return figure_tag(fig, f"confusion matrix: {title}")


def horizontal_bars(values: dict[str, float], xlabel: str, alt: str) -> str:
    names = list(values)
    numbers = [values[n] if values[n] is not None else np.nan for n in names]
    fig, axis = plt.subplots(figsize=(6.5, 0.4 * len(names) + 1.2))
    colours = ["#c0392b" if v < 0 else "#2f6db5" for v in numbers]
    axis.barh(names, numbers, color=colours)
    axis.axvline(0, color="black", linewidth=0.5)
    axis.invert_yaxis()
    axis.set_xlabel(xlabel)
    return figure_tag(fig, alt)


def robustness_curves(result: dict) -> str | None:
    """One panel per input: every perturbation's score against its level, with the clean
    score as a dashed line (levels have different units, so each curve is drawn over its
    own positions 1..n and labelled with its values)."""
    curves = result["curves"]
    if not curves:
        return None
    inputs = list(dict.fromkeys(c["input"] for c in curves))
    columns = min(2, len(inputs))
    rows = math.ceil(len(inputs) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.4 * rows), squeeze=False)
    for axis, name in zip(axes.flat, inputs, strict=False):
        for line in (c for c in curves if c["input"] == name):
            positions = range(1, len(line["levels"]) + 1)
            label = f"{line['perturbation']}: {line['unit']} " + ", ".join(
                f"{level:.3g}" for level in line["levels"]
            )
            axis.plot(positions, line["scores"], "-o", markersize=3, label=label)
        axis.axhline(result["clean"], color="black", linestyle="--", linewidth=0.8, label="clean")
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("strength (mild → strong)")
        axis.set_ylabel(result["metric"])
        axis.legend(fontsize=6)
    for axis in list(axes.flat)[len(inputs) :]:
        axis.remove()
    fig.tight_layout()
    return figure_tag(fig, "robustness curves")
