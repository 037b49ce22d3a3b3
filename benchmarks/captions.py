"""Captions of unseen combinations: BLEU-4, CIDEr-D and exact match of a polymodal image ->
caption model against a nearest-neighbour baseline (the caption of the most similar training
image by cosine similarity of raw pixels at 32x32), on the scenes `build_captions.py` writes.
Every test image holds at least one (colour, object) pair that no training image has.

    .venv/bin/python benchmarks/build_captions.py
    .venv/bin/python benchmarks/captions.py [--epochs 60] [--augment]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from build_captions import pixels
from common import ROOT, machine, require

from polymodal import Model
from polymodal.config import Config
from polymodal.tasks.text.metrics import text_metrics

DATA = ROOT / "benchmarks" / "data" / "captions"
SHOWN = ("bleu4", "cider_d", "exact_match", "wer", "chrf")


def nearest_neighbour(csv: Path, train: pd.DataFrame, test: pd.DataFrame) -> list[str]:
    train_pixels, test_pixels = pixels(csv, train["image"]), pixels(csv, test["image"])
    nearest = np.concatenate(
        [(part @ train_pixels.T).argmax(axis=1) for part in np.array_split(test_pixels, 8)]
    )
    return train["caption"].iloc[nearest].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", type=Path, default=DATA / "captions.csv")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--patience", type=int, default=15, help="epochs without a better score")
    parser.add_argument("--augment", action="store_true", help="small random image shifts")
    parser.add_argument("--max-minutes", type=float, default=None, help="training time limit")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument(
        "--memory-layers", type=int, default=None, help="the text target's; default: its default"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "captions")
    args = parser.parse_args()
    table = pd.read_csv(require(args.csv), keep_default_na=False)
    table["image"] = [str(args.csv.parent / path) for path in table["image"]]
    train = table[table["split"] == "train"].reset_index(drop=True)
    test = table[table["split"] == "test"].reset_index(drop=True)
    print(machine())
    print(f"{len(train)} training scenes, {len(test)} test scenes (unseen combinations)")
    references = test["caption"].tolist()
    rows = {
        "nearest neighbour (pixels)": text_metrics(
            references, nearest_neighbour(args.csv, train, test)
        )
    }
    text_options = {} if args.memory_layers is None else {"memory_layers": args.memory_layers}
    config = Config.model_validate(
        {
            "targets": [{"column": "caption", "task": "text", "options": text_options}],
            "inputs": ["image"],
            "train": {
                "max_epochs": args.epochs,
                "patience": args.patience,
                "seed": args.seed,
                "augment": args.augment,
                "max_time": args.max_minutes and str(args.max_minutes),
            },
        }
    )
    started = time.perf_counter()
    model = Model(config=config).fit(train.drop(columns=["split"]), out=args.out, overwrite=True)
    seconds = time.perf_counter() - started
    rows["polymodal greedy"] = text_metrics(
        references, model.predict(test)["caption_predicted"].tolist()
    )
    model.set_decoding(beam=args.beam)
    rows[f"polymodal beam {args.beam}"] = text_metrics(
        references, model.predict(test)["caption_predicted"].tolist()
    )
    epochs = len(model.metrics_["history"])
    print(f"polymodal: {epochs} epochs (best {model.metrics_['best_epoch']}) in {seconds:.0f} s")
    print("| model | " + " | ".join(SHOWN) + " |")
    print("|" + " --- |" * (len(SHOWN) + 1))
    for name, metrics in rows.items():
        print(f"| {name} | " + " | ".join(f"{metrics[m]:.3f}" for m in SHOWN) + " |")
    (args.out / "captions.json").write_text(
        json.dumps({"seconds": seconds, "epochs": epochs, "rows": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
