"""A label only both inputs together predict: does each fusion's default budget suffice?

    .venv/bin/python -m benchmarks.joint_label [--rows 10000] [--fusions concat,late,attention]
        [--budgets default,3x] [--seed 0] [--epochs N]  # --epochs: smoke tests only

Why: on AV-MNIST either input alone already names the digit, so a model that ignores one input
still scores well, and a budget too short to learn the interaction goes unnoticed. Here each row
pairs an MNIST image of digit a with an FSDD recording of digit b, a and b drawn independently
and uniformly, and the label is the pair (parity of a, parity of b): four classes, as the
demo's shape x pitch. Either input alone can name only half of the pair, so it tops out at 50%
(chance is 25%); above that needs both. The acceptance item: with the defaults, each fusion
reaches within 2 points of the test accuracy it reaches with 3x the budget (max_epochs,
patience and any max_time tripled); a gap says the defaults stop before the joint label is
learnt.

A pair label rather than the parity of a + b: late fusion adds up one head per input, each
seeing one input only, so it can express the pair (a score for a's parity plus one for b's)
but not an XOR of the two, and would sit at chance on a + b at any budget, which says nothing
about budgets.

Data, built once into benchmarks/data/joint/ (git-ignored) from ../shared/datasets, seeded:
- rows 80% train, 10% valid, 10% test, in a `split` column that polymodal follows as given.
- MNIST (its 10,000-image test set): train rows draw images 0-7499, valid 7500-8499, test
  8500-9999; FSDD: train rows draw recordings with index 10-49, valid 5-9, test 0-4 (FSDD's own
  test recordings). No valid or test row shares a file with a train row, so neither early
  stopping nor the test score is flattered by files seen in training.
- images are written as PNGs; audio cells point at the WAVs in ../shared (not copied).
- within a split, each digit's files are used in a shuffled order, each once before any twice.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from benchmarks.common import DATASETS, ROOT, machine, read_mnist, require
from polymodal import Model
from polymodal.config import Config

DATA = ROOT / "benchmarks" / "data" / "joint"
TABLE = "joint.csv"
STAMP = "build-pairs.json"  # the rows and seed the pair-label table was built with
FRACTIONS = {"train": 0.8, "valid": 0.1}  # test: the rest
MNIST_RANGES = {"train": range(0, 7500), "valid": range(7500, 8500), "test": range(8500, 10000)}
FSDD_INDEXES = {"train": range(10, 50), "valid": range(5, 10), "test": range(0, 5)}
WITHIN_POINTS = 2.0
PARITY = ("even", "odd")


# ------------------------------------------------------------------------------------- data
def fsdd_pools(folder: Path, indexes: range) -> dict[int, list[Path]]:
    """FSDD recordings per spoken digit whose index (`{digit}_{speaker}_{index}.wav`) is in
    `indexes`, sorted so the seeded draws do not depend on the directory's order."""
    pools: dict[int, list[Path]] = {digit: [] for digit in range(10)}
    for path in sorted(folder.glob("*.wav")):
        digit, _, index = path.stem.split("_")
        if int(index) in indexes:
            pools[int(digit)].append(path)
    return pools


def draw(pools: dict[int, list], digits: np.ndarray, rng: np.random.Generator) -> list:
    """One item of each requested digit, from that digit's pool in a shuffled order that is
    reshuffled only when used up: files repeat as little as the pool's size allows."""
    queues: dict[int, list] = {digit: [] for digit in pools}
    taken = []
    for digit in digits.tolist():
        if not queues[digit]:
            queues[digit] = [pools[digit][i] for i in rng.permutation(len(pools[digit]))]
        taken.append(queues[digit].pop())
    return taken


def split_sizes(rows: int) -> dict[str, int]:
    train, valid = (int(rows * FRACTIONS[name]) for name in ("train", "valid"))
    return {"train": train, "valid": valid, "test": rows - train - valid}


def build(rows: int, seed: int, folder: Path) -> Path:
    """The table at `folder`/joint.csv, built unless one with the same rows and seed is there.

    Images are named by their MNIST index, so a rebuild with other rows rewrites none it
    already wrote; audio paths are relative to the table's folder, as polymodal reads them."""
    table, stamp = folder / TABLE, folder / STAMP
    wanted = {"rows": rows, "seed": seed}
    if table.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return table
    started = time.perf_counter()
    images, labels = read_mnist(require(DATASETS / "raw" / "mnist"))
    recordings = require(DATASETS / "raw" / "fsdd" / "recordings")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    parts = []
    for split, count in split_sizes(rows).items():
        image_pools = {
            digit: [i for i in MNIST_RANGES[split] if labels[i] == digit] for digit in range(10)
        }
        image_digits = rng.integers(0, 10, count)
        audio_digits = rng.integers(0, 10, count)  # independent of the image's digit
        chosen_images = draw(image_pools, image_digits, rng)
        chosen_audio = draw(fsdd_pools(recordings, FSDD_INDEXES[split]), audio_digits, rng)
        for index in set(chosen_images):
            path = folder / "images" / f"{index:05d}.png"
            if not path.is_file():
                Image.fromarray(images[index]).save(path)
        parts.append(
            pd.DataFrame(
                {
                    "image": [f"images/{index:05d}.png" for index in chosen_images],
                    "audio": [os.path.relpath(path, folder) for path in chosen_audio],
                    "label": [
                        f"{PARITY[a % 2]} image, {PARITY[b % 2]} sound"
                        for a, b in zip(image_digits, audio_digits, strict=True)
                    ],
                    "image_digit": image_digits,
                    "audio_digit": audio_digits,
                    "split": split,
                }
            )
        )
    pd.concat(parts, ignore_index=True).to_csv(table, index=False)
    stamp.write_text(json.dumps(wanted))
    print(f"built {table} ({rows} rows) in {time.perf_counter() - started:.1f} s", flush=True)
    return table


# ------------------------------------------------------------------------------------- runs
def budget_factor(name: str) -> float:
    """'default' is 1; 'Nx' is N times the default budget."""
    if name == "default":
        return 1.0
    match = re.fullmatch(r"(\d+(?:\.\d+)?)x", name)
    if not match:
        raise SystemExit(f"budget {name!r}: use 'default' or a multiple such as '3x'")
    return float(match.group(1))


def scale_max_time(value: str | None, factor: float) -> str | None:
    """max_time (minutes, or DD:HH:MM:SS as Lightning reads it) times `factor`, as minutes."""
    if value is None:
        return None
    if ":" in value:
        days, hours, minutes, seconds = (int(part) for part in value.split(":"))
        total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
        return f"{total * factor / 60:g}"
    return f"{float(value) * factor:g}"


def config(fusion: str, factor: float, epochs: int | None) -> Config:
    """The defaults, but for the fusion and the budget: what the acceptance item asks about.
    Inputs and kinds are spelt out so the digit and split columns never become inputs."""
    settings = Config.model_validate(
        {
            "targets": [{"column": "label"}],
            "inputs": ["image", "audio"],
            "columns": {"image": {"kind": "image"}, "audio": {"kind": "audio"}},
        }
    )
    settings.model.fusion = fusion
    train = settings.train
    if epochs:  # a smaller base budget, for smoke tests only
        train.max_epochs = epochs
    train.max_epochs = max(1, round(train.max_epochs * factor))
    train.patience = max(1, round(train.patience * factor))
    train.max_time = scale_max_time(train.max_time, factor)
    return settings


def run(table: Path, fusion: str, budget: str, args: argparse.Namespace) -> dict:
    """Train one model; its test accuracy is scored by `fit` on the table's test rows."""
    settings = config(fusion, budget_factor(budget), args.epochs)
    train = settings.train
    print(
        f"starting {fusion} / {budget}: max_epochs {train.max_epochs}, patience "
        f"{train.patience}, max_time {train.max_time}",
        flush=True,
    )
    started = time.perf_counter()
    model = Model(config=settings).fit(table, out=args.out / f"{fusion}-{budget}", overwrite=True)
    metrics = model.metrics_
    result = {
        "fusion": fusion,
        "budget": budget,
        "max_epochs": train.max_epochs,
        "epochs": len(metrics["history"]),
        "best_epoch": metrics["best_epoch"],  # counted from 0, as Lightning counts
        "stopped_by": metrics.get("stop_reason", ""),  # plateau | epochs | time, where reported
        "train_seconds": round(metrics["train_seconds"], 1),
        "fit_seconds": round(time.perf_counter() - started, 1),  # with decoding and saving
        "valid_accuracy": metrics["valid"]["label"]["accuracy"],
        "test_accuracy": metrics["test"]["label"]["accuracy"],
    }
    print(json.dumps(result), flush=True)
    return result


def markdown(results: list[dict]) -> str:
    """One row per run; a longer budget's row also says how far the default fell short of it."""
    default = {r["fusion"]: r["test_accuracy"] for r in results if r["budget"] == "default"}
    header = ["fusion", "budget", "epochs run", "best epoch (from 0)", "stopped by", "train s",
              "fit s", "test accuracy", "default - this (points)",
              f"within {WITHIN_POINTS:g}"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in results:
        gap, within = "", ""
        if r["budget"] != "default" and r["fusion"] in default:
            points = 100 * (default[r["fusion"]] - r["test_accuracy"])
            gap, within = f"{points:+.1f}", "yes" if points >= -WITHIN_POINTS else "no"
        cells = [r["fusion"], r["budget"], f"{r['epochs']} / {r['max_epochs']}",
                 str(r["best_epoch"]), r["stopped_by"], f"{r['train_seconds']:.0f}",
                 f"{r['fit_seconds']:.0f}", f"{r['test_accuracy']:.4f}", gap, within]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000, help="600 makes a quick smoke test")
    parser.add_argument("--fusions", default="concat,late,attention")
    parser.add_argument("--budgets", default="default,3x", help="'default' and/or 'Nx'")
    parser.add_argument("--seed", type=int, default=0, help="draws the data set's rows")
    parser.add_argument(
        "--epochs", type=int, default=None, help="base max_epochs before scaling: smoke tests only"
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=DATA / "runs", help="trained models")
    args = parser.parse_args()
    budgets = args.budgets.split(",")
    for budget in budgets:
        budget_factor(budget)  # refuse a bad name before any training
    os.environ.setdefault("POLYMODAL_PROGRESS", "0")
    os.environ.setdefault("POLYMODAL_CACHE", str(args.data / "cache"))
    print(machine())
    print("command: " + shlex.join(["python", "-m", "benchmarks.joint_label", *sys.argv[1:]]))
    table = build(args.rows, args.seed, args.data)
    test = pd.read_csv(table).query("split == 'test'")
    chance = test["label"].value_counts(normalize=True).max()
    print(
        f"{split_sizes(args.rows)} rows; test majority class {chance:.4f} (chance); "
        f"defaults {Config().train.max_epochs} epochs, patience {Config().train.patience}, "
        f"max_time {Config().train.max_time}",
        flush=True,
    )
    results = [
        run(table, fusion, budget, args) for fusion in args.fusions.split(",") for budget in budgets
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(markdown(results))


if __name__ == "__main__":
    main()
