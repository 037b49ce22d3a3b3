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


CROP_PERCENTILE = 95  # of sampled clip lengths: the longest twentieth lose their tail
WHOLE_MARGIN = 1.1  # over the longest sampled clip, for clips longer than any sampled one


def crop_length(lengths: list[float], whole: bool) -> float:
    """How long a clip (in frames or seconds) is kept, from a sample of training clips.

    For a label, the 95th percentile: the longest clips lose a tail that rarely decides the
    label, and every batch is padded to a shorter length. A target that transcribes its
    inputs (`whole`) loses words with that tail, so the crop is the longest sampled clip plus
    a tenth, for the clips longer than any in the sample."""
    if whole:
        return float(max(lengths)) * WHOLE_MARGIN
    return float(np.percentile(lengths, CROP_PERCENTILE))


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
