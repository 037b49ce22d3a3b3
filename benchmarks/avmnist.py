"""AV-MNIST: `polymodal compare` on the fixed split, plus speed and memory figures.

.venv/bin/python benchmarks/avmnist.py [--seeds 1] [--epochs 15] [--out runs/bench-avmnist]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from common import DATASETS, ROOT, machine, peak_memory_mib, require

sys.path.insert(0, str(ROOT / "src"))

from polymodal.config import Config  # noqa: E402
from polymodal.evaluation.compare import compare, write_comparison  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-avmnist"))
    args = parser.parse_args()
    os.environ.setdefault("POLYMODAL_PROGRESS", "0")
    data = require(DATASETS / "avmnist" / "avmnist.csv")
    config = Config(inputs=["image", "audio"])
    if args.epochs:
        config.train.max_epochs = args.epochs
    started = time.perf_counter()
    result = compare(data, "label", config, seeds=args.seeds)
    write_comparison(result, __import__("pathlib").Path(args.out))
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
            rate += f", {9000 * 0.9 * len(history) / runs[0]['seconds']:.0f} train samples/s"
        print(
            f"  {row['name']:<24} {row['mean']:.4f} ± {row['std']:.4f}  {row['seconds']:.0f} s{rate}"
        )
    gain = result["modality_gain"]
    print(
        f"modality gain {gain['gain']:+.4f} ± {gain['standard_error']:.4f}; "
        f"error ratio best fusion / best unimodal {gain.get('error_ratio', float('nan')):.3f}"
    )
    print(f"peak memory {peak_memory_mib():.0f} MiB; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
