"""Text -> image search on unseen combinations: a polymodal match target over (image, caption),
instance level (each row is its own pair), trained on the scenes `build_captions.py` writes.
Every test image holds at least one (colour, object) pair that no training image has.

The caption and image of each test scene are embedded apart (`Model.embed(..., column=...)`)
and ranked by `tasks.match.retrieval_metrics`: each caption queries the test images (its only
positive is its own image) and each image the test captions; recall@1/5/10, median rank and
mAP, against chance (recall@k = k / gallery). The same is measured on a sample of as many
training scenes (seen combinations) as there are test scenes, to show the gap between seen and
unseen combinations. A second level, "same caption", counts every scene whose caption is
identical to the query's as a positive (several scenes share a caption, "a red circle" say;
at instance level no model can tell them apart from the caption alone).

    .venv/bin/python benchmarks/build_captions.py
    .venv/bin/python benchmarks/match_captions.py [--epochs N] [--max-minutes M] [--seed 0]
                                                   [--train-rows N] [--out runs/match-captions]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import ROOT, machine, require

from polymodal import Model
from polymodal.config import Config
from polymodal.tasks.match import match_target, retrieval_metrics

DATA = ROOT / "benchmarks" / "data" / "captions"
KS = (1, 5, 10)
SHOWN = ("recall@1", "recall@5", "recall@10", "median_rank", "mAP")


def require_csv(csv: Path) -> Path:
    if not csv.exists():
        print(f"{csv} is missing: run `.venv/bin/python benchmarks/build_captions.py` first")
    return require(csv)


def scores(model: Model, frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Both directions at instance level and at the level of identical captions."""
    text = model.embed(frame, column="caption")
    image = model.embed(frame, column="image")
    captions = frame["caption"].to_numpy()
    return {
        "text→image | instance": retrieval_metrics(text, image, ks=KS),
        "image→text | instance": retrieval_metrics(image, text, ks=KS),
        "text→image | same caption": retrieval_metrics(text, image, captions, captions, ks=KS),
        "image→text | same caption": retrieval_metrics(image, text, captions, captions, ks=KS),
    }


def chance(gallery: int) -> dict[str, float]:
    """A random ranking at instance level: recall@k = k / gallery, the positive's rank uniform
    over 1..gallery (median (gallery + 1) / 2, mAP = mean of 1 / rank)."""
    return {
        **{f"recall@{k}": min(k / gallery, 1.0) for k in KS},
        "median_rank": (gallery + 1) / 2,
        "mAP": float(np.mean(1 / np.arange(1, gallery + 1))),
    }


def print_table(rows: dict[str, dict[str, dict[str, float]]], galleries: dict[str, int]) -> None:
    header = ["scenes", "direction", "level", "gallery", *SHOWN]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for scenes, directions in rows.items():
        gallery = galleries[scenes]
        for name, metrics in directions.items():
            direction, level = name.split(" | ")
            cells = [
                f"{metrics[m]:.1f}" if m == "median_rank" else f"{metrics[m]:.3f}" for m in SHOWN
            ]
            print(f"| {scenes} | {direction} | {level} | {gallery} | " + " | ".join(cells) + " |")
    gallery = galleries[next(iter(rows))]
    random = chance(gallery)
    cells = [f"{random[m]:.1f}" if m == "median_rank" else f"{random[m]:.3f}" for m in SHOWN]
    print(f"| chance | either | instance | {gallery} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--csv", type=Path, default=DATA / "captions.csv")
    parser.add_argument("--epochs", type=int, default=None, help="train.max_epochs (default 60)")
    parser.add_argument("--max-minutes", type=float, default=None, help="training time limit")
    parser.add_argument("--train-rows", type=int, default=None, help="keep the first N rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "match-captions")
    args = parser.parse_args()
    table = pd.read_csv(require_csv(args.csv), keep_default_na=False)
    table["image"] = [str(args.csv.parent / path) for path in table["image"]]
    train = table[table["split"] == "train"].reset_index(drop=True)
    test = table[table["split"] == "test"].reset_index(drop=True)
    if args.train_rows is not None:
        train = train.head(args.train_rows)
    picked = np.random.default_rng(args.seed).choice(
        len(train), size=min(len(test), len(train)), replace=False
    )
    seen = train.iloc[np.sort(picked)].reset_index(drop=True)
    print(machine())
    print(
        f"{len(train)} training scenes, {len(test)} test scenes (unseen combinations), "
        f"{len(seen)} training scenes sampled (seen combinations)"
    )
    for name, frame in (("test", test), ("training sample", seen)):
        distinct = frame["caption"].nunique()
        print(
            f"{name}: {distinct} distinct captions in {len(frame)} scenes (at instance level a "
            f"model that reads only what a caption says reaches recall@1 {distinct / len(frame):.3f})"
        )

    config = Config(targets=[match_target(["image", "caption"])])
    config.train.seed = args.seed
    if args.epochs is not None:
        config.train.max_epochs = args.epochs
    if args.max_minutes is not None:
        config.train.max_time = str(args.max_minutes)
    started = time.perf_counter()
    model = Model(config=config).fit(train.drop(columns=["split"]), out=args.out, overwrite=True)
    seconds = time.perf_counter() - started
    epochs = len(model.metrics_["history"])
    best = model.metrics_.get("best_epoch")

    rows = {"test (unseen)": scores(model, test), "training sample (seen)": scores(model, seen)}
    print(f"polymodal match: {epochs} epochs (best {best}) in {seconds:.0f} s")
    print_table(rows, {"test (unseen)": len(test), "training sample (seen)": len(seen)})
    print()
    print("| train s | epochs (best) | max_epochs | training rows | test scenes | machine |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(
        f"| {seconds:.0f} | {epochs} ({best}) | {config.train.max_epochs} | {len(train)} | "
        f"{len(test)} | {machine().removeprefix('machine: ')} |"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "match_captions.json").write_text(
        json.dumps(
            {"seconds": seconds, "epochs": epochs, "best_epoch": best, "rows": rows}, indent=1
        )
    )


if __name__ == "__main__":
    main()
