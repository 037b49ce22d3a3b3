"""AV-MNIST: `polymodal compare` on the fixed split, plus speed and memory figures.

.venv/bin/python benchmarks/avmnist.py [--seeds 1] [--epochs 15] [--out runs/bench-avmnist]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from common import DATASETS, ROOT, machine, peak_memory_mib, require

sys.path.insert(0, str(ROOT / "src"))

from polymodal.config import Config, TargetConfig  # noqa: E402
from polymodal.data.cache import FeatureCache  # noqa: E402
from polymodal.data.features import encode_inputs, fit_schema  # noqa: E402
from polymodal.data.problems import ProblemLog  # noqa: E402
from polymodal.data.table import Table, read_table, split_rows  # noqa: E402
from polymodal.evaluation.compare import compare, write_comparison  # noqa: E402


def decode_seconds(table: Table, config: Config, rows: np.ndarray, cache: Path) -> tuple:
    """Seconds to turn every row into features with an empty cache, then with it filled: the
    cache is why only a model's first run (not every epoch, nor every later run) decodes."""
    config = config.model_copy(deep=True)
    config.targets = [TargetConfig(column="label")]
    schema = fit_schema(table, rows, config)
    shutil.rmtree(cache, ignore_errors=True)
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        encode_inputs(schema, table, ProblemLog(), FeatureCache(cache))
        seconds.append(time.perf_counter() - started)
    return seconds[0], seconds[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-avmnist"))
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "bench-avmnist-cache")
    args = parser.parse_args()
    os.environ.setdefault("POLYMODAL_PROGRESS", "0")
    os.environ["POLYMODAL_CACHE"] = str(args.cache)  # starts empty: see decode_seconds
    data = require(DATASETS / "avmnist" / "avmnist.csv")
    config = Config(inputs=["image", "audio"])
    if args.epochs:
        config.train.max_epochs = args.epochs
    table = read_table(data)
    split = split_rows(table, config.train.valid_fraction, config.train.seed, ["image", "audio"])
    train_rows = len(split["train"])
    cold, warm = decode_seconds(table, config, split["train"], args.cache)
    started = time.perf_counter()
    result = compare(data, "label", config, seeds=args.seeds)
    write_comparison(result, Path(args.out))
    print(machine())
    print(f"AV-MNIST test accuracy, {args.seeds} seed(s), max {config.train.max_epochs} epochs:")
    for row in result["configurations"]:
        runs = row["runs"]
        epochs = [len(run["history"]) for run in runs if run["history"]]
        rate = ""
        if epochs and runs[0]["history"]:
            history = runs[0]["history"]
            rate = (
                f"  epoch1 {history[0]['seconds']:.1f} s, epoch2 {history[1]['seconds']:.1f} s"
                if len(history) > 1
                else ""
            )
            epoch_seconds = sum(epoch["seconds"] for epoch in history)
            rate += f", {train_rows * len(history) / epoch_seconds:.0f} train samples/s"
        print(
            f"  {row['name']:<24} {row['mean']:.4f} ± {row['std']:.4f}  {row['seconds']:.0f} s{rate}"
        )
    gain = result["modality_gain"]
    print(
        f"modality gain {gain['gain']:+.4f} ± {gain['standard_error']:.4f}; "
        f"error ratio best fusion / best unimodal {gain.get('error_ratio', float('nan')):.3f}"
    )
    print(f"decoding all {len(table)} rows: {cold:.1f} s cold, {warm:.1f} s from the feature cache")
    print(f"peak memory {peak_memory_mib():.0f} MiB; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
