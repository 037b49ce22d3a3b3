"""AV-MNIST spoken digit → images, scored two ways on one trained match model: by cosine to
the query's vector (what `search` does) and by cosine to the query's nearest class proxy.

Why: the match model's audio tower names the right digit for about 0.81 of the test
recordings, yet cosine ranking gives precision@1 near 0.67-0.75, because the images nearest a
query's vector are often images the image tower placed in the wrong class. Replacing the query
by its nearest proxy ranks the images the image tower is surest belong to that class first,
which is what the classifier baseline's p·p ranking does. An analysis, not a feature yet.

    .venv/bin/python benchmarks/match_avmnist.py --augment --skip-baseline --out runs/bench-match
    .venv/bin/python benchmarks/match_by_class.py runs/bench-match/match
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import DATASETS, ROOT, machine, require

sys.path.insert(0, str(ROOT / "src"))

from polymodal import Model  # noqa: E402
from polymodal.tasks.match import retrieval_metrics  # noqa: E402

SHOWN = ("precision@1", "mAP", "recall@5", "median_rank")


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path, help="a match model trained with --positive-by")
    args = parser.parse_args()
    table = require(DATASETS / "avmnist" / "avmnist.csv")
    test = pd.read_csv(table).query("split == 'test'").reset_index(drop=True)
    test = test.assign(**{c: [str(table.parent / p) for p in test[c]] for c in ("image", "audio")})
    model = Model.load(args.model)
    task = model.task()
    proxies = task._head.proxies  # the learned class vectors (one per class)
    if proxies is None:
        raise SystemExit(f"{args.model} has no class proxies: train it with --positive-by")
    proxies = unit(proxies.detach().float().numpy())
    classes = np.array(task.state.classes)
    audio = unit(model.embed(test, column="audio"))
    image = unit(model.embed(test, column="image"))
    keys = test["label"].astype(str).to_numpy()
    nearest = (audio @ proxies.T).argmax(axis=1)
    print(f"{machine()}; {len(test)} test rows; {args.model}")
    print(f"audio tower names the right digit for {(classes[nearest] == keys).mean():.3f}")
    print(f"image tower for {(classes[(image @ proxies.T).argmax(axis=1)] == keys).mean():.3f}")
    rows = {
        "cosine to the query": retrieval_metrics(audio, image, keys, keys),
        "cosine to the query's nearest proxy": retrieval_metrics(
            proxies[nearest], image, keys, keys
        ),
    }
    print("| audio→image scored by | " + " | ".join(SHOWN) + " |")
    print("|" + " --- |" * (len(SHOWN) + 1))
    for name, metrics in rows.items():
        print(f"| {name} | " + " | ".join(f"{metrics[k]:.3f}" for k in SHOWN) + " |")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
