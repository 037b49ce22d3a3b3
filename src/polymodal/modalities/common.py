"""Small helpers several modalities' hooks share (noise, attribution summaries, plotting)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def gaussian(values: torch.Tensor, sigma: float, rng: np.random.Generator) -> torch.Tensor:
    """Gaussian noise of standard deviation `sigma`, shaped like `values`."""
    return torch.from_numpy(rng.normal(0.0, sigma, values.shape).astype(np.float32))


def shares(weights: np.ndarray) -> list[float]:
    """Each weight's share of the total, rounded for JSON."""
    total = float(weights.sum())
    return [round(float(w) / total, 5) if total > 0 else 0.0 for w in weights]


def valid_steps(item: Any) -> int:
    """Frames (audio) or tokens (text) of an `InputAttribution` that hold data, not padding."""
    return item.length if item.length else item.values.shape[-1]


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, imported on first use: drawing is
    rare, and matplotlib would slow every `import polymodal.modalities`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
