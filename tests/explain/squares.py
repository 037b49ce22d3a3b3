"""Generated images whose label is a bright square drawn in the top-left quadrant (or not),
on a noisy background, with a number column that also tells the label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SIZE = 16
QUADRANT = SIZE // 2


def square_image(
    rng: np.random.Generator, with_square: bool, brightness: float = 1.0
) -> np.ndarray:
    pixels = 0.25 + rng.normal(0, 0.06, (SIZE, SIZE))
    if with_square:
        side = int(rng.integers(3, 6))
        top, left = (int(v) for v in rng.integers(0, QUADRANT - side + 1, 2))
        pixels[top : top + side, left : left + side] = brightness
    return np.clip(pixels * 255, 0, 255).astype(np.uint8)


def squares(
    folder: Path, rows: int = 96, seed: int = 0, hint_noise: float = 0.3, brightness: float = 1.0
) -> Path:
    """data.csv with `picture` (grey PNG), `hint` (number) and `label` (square / plain)."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(rows):
        label = index % 2 == 0
        Image.fromarray(square_image(rng, label, brightness), mode="L").save(
            folder / "img" / f"{index}.png"
        )
        records.append(
            {
                "picture": f"img/{index}.png",
                "hint": float(label) + float(rng.normal(0, hint_noise)),
                "label": "square" if label else "plain",
            }
        )
    path = folder / "data.csv"
    pd.DataFrame(records).to_csv(path, index=False)
    return path
