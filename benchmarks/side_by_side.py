"""The default AV-MNIST run under two source trees, side by side in one sitting.

    python benchmarks/side_by_side.py --base /path/to/other/checkout --runs 2

Runs `polymodal train ../shared/datasets/avmnist/avmnist.csv --target label` with each tree's
`src` first on PYTHONPATH (same venv, same feature cache, warmed by a first untimed run so
neither side pays for decoding), alternating base and current, and prints each run's test
accuracy and wall time, then the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "avmnist" / "avmnist.csv"
TRAIN = "from polymodal.cli import app; app()"


def run(tree: Path, out: Path, cache: Path) -> tuple[float, float, float]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "POLYMODAL_CACHE": str(cache)}
    env["POLYMODAL_PROGRESS"] = "0"
    command = [sys.executable, "-c", TRAIN, "train", str(DATA), "--target", "label"]
    command += ["--out", str(out)]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics["test"]["label"]["accuracy"], seconds, metrics["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, required=True, help="the other checkout")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    trees = {"base": args.base.resolve(), "current": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        run(ROOT, Path(tmp) / "warm", cache)  # decodes every file once, for both sides
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in trees}
        for index in range(args.runs):
            for name, tree in trees.items():
                accuracy, seconds, training = run(tree, Path(tmp) / f"{name}-{index}", cache)
                results[name].append((accuracy, seconds, training))
                print(
                    f"{name} run {index}: test accuracy {accuracy:.4f}, {seconds:.1f} s "
                    f"({training:.1f} s of training)",
                    flush=True,
                )
    for name, rows in results.items():
        accuracy = statistics.median(row[0] for row in rows)
        seconds = statistics.median(row[1] for row in rows)
        print(f"{name}: median test accuracy {accuracy:.4f}, median wall time {seconds:.1f} s")


if __name__ == "__main__":
    main()
