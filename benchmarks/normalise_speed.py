"""Normalising a cached feature column: float32 blocks of about 2 MiB against one block of
every row (the block size before 2026-12-01, 4,096 rows, held a whole 3,000-row column).

    .venv/bin/python benchmarks/normalise_speed.py [--rows 3000] [--repeats 9]

The column is shaped as an AV-MNIST spectrogram column (float16 [rows, 1, 40, 101]); the two
block sizes alternate and the best of `--repeats` of each is printed, with their ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import machine

from polymodal.data import column
from polymodal.data.column import normalised_float16


def best_ms(raw: np.ndarray, mean: np.ndarray, std: np.ndarray, real: np.ndarray) -> float:
    started = time.perf_counter()
    normalised_float16(raw, mean, std, real)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(args.rows, 1, 40, 101)).astype(np.float16)
    mean = rng.normal(size=(1, 40, 1)).astype(np.float32)
    std = rng.uniform(0.5, 2.0, (1, 40, 1)).astype(np.float32)
    real = np.ones((args.rows, 1, 1, 1), dtype=bool)
    sizes = {"blocks of 2 MiB": column.BLOCK_BYTES, "one block": raw.size * 4}
    times: dict[str, list[float]] = {name: [] for name in sizes}
    for _ in range(args.repeats):
        for name, size in sizes.items():
            column.BLOCK_BYTES = size
            times[name].append(best_ms(raw, mean, std, real))
    print(machine())
    print(f"{args.rows} rows of float16 [1, 40, 101], {raw.size * 4 / 2**20:.0f} MiB in float32")
    for name, values in times.items():
        print(f"{name:16s} {min(values):7.1f} ms (best of {args.repeats})")
    print(
        f"one block / 2 MiB blocks: {min(times['one block']) / min(times['blocks of 2 MiB']):.1f}×"
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
