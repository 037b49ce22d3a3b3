"""Real model embeddings at scale, for `benchmarks/vector_index.py --data embeddings`.

    .venv/bin/python benchmarks/image_embeddings.py [--rows 1000000] [--queries 200]
                                                    [--out runs/embeddings]

A match model (`--match image=audio --positive-by label`, every default but a 256-d space) is
trained on AV-MNIST (../shared/datasets/avmnist); then its image tower embeds AV-MNIST's
10,000 images again and again, each time with a new random shift (up to 3 pixels), rotation
(up to 15 degrees) and scale (0.9-1.1), until there are `--rows` vectors, and `--queries` more
from the test rows' images. Writes `vectors.npy` (float32 [rows, 256], unit length) and
`queries.npy`. The model and the images are real; the augmentation is what lets 10,000 images
give a million distinct vectors. Such vectors are far from isotropic: they gather around
the ten digits (and by the model's proxies), which an approximate index can use.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F  # noqa: N812
from common import DATASETS, ROOT, machine, require

sys.path.insert(0, str(ROOT / "src"))

from polymodal import Model  # noqa: E402
from polymodal.config import Config  # noqa: E402
from polymodal.tasks.match import match_target  # noqa: E402

DIM = 256
BATCH = 1_000


def train(table: Path, out: Path, seed: int) -> Model:
    if (out / "config.json").is_file():
        print(f"reusing the model in {out}")
        return Model.load(out)
    config = Config()
    config.model.dim = DIM
    config.train.seed = seed
    config.targets = [match_target(["image", "audio"], positive_by="label")]
    return Model(config=config).fit(table, out=out, overwrite=True)


def augmented(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted, rotated and scaled at random (edges filled from the border, which
    is the background in MNIST)."""
    n, _, size, _ = images.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * np.pi / 12
    scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * 3 * 2 / size  # in [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)


def image_vectors(model: Model, features: dict, rows: np.ndarray, total: int, seed: int):
    """`total` unit vectors of augmented copies of the images at `rows`, through the image
    tower alone (the audio input masked, as `Model.embed(column="image")` does)."""
    generator = torch.Generator().manual_seed(seed)
    net = model.net_.eval()
    chunks, done, started = [], 0, time.perf_counter()
    with torch.inference_mode():
        while done < total:
            take = torch.as_tensor(rows[torch.randint(len(rows), (BATCH,), generator=generator)])
            inputs = {
                name: {key: value[take] for key, value in item.items()}
                for name, item in features.items()
            }
            for name, item in inputs.items():
                if name != "image":
                    item["present"] = torch.zeros_like(item["present"])
            image = inputs["image"]["values"]
            inputs["image"]["values"] = augmented(image.float(), generator).to(image.dtype)
            vectors = net.embedding(net.encode(inputs), "image").float()
            chunks.append(F.normalize(vectors, dim=1).numpy())
            done += BATCH
            if len(chunks) % 100 == 0:
                print(f"  {done:,} vectors, {time.perf_counter() - started:.0f} s", flush=True)
    return np.concatenate(chunks)[:total]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "embeddings")
    args = parser.parse_args()
    table = require(DATASETS / "avmnist" / "avmnist.csv")
    print(machine())
    started = time.perf_counter()
    model = train(table, args.out / "match", args.seed)
    print(f"match model: {time.perf_counter() - started:.0f} s")
    frame = pd.read_csv(table)
    frame = frame.assign(
        **{c: [str(table.parent / p) for p in frame[c]] for c in ("image", "audio")}
    )
    features = model.encode(frame)
    test = np.flatnonzero(frame["split"].to_numpy() == "test")
    started = time.perf_counter()
    vectors = image_vectors(model, features, np.arange(len(frame)), args.rows, args.seed)
    queries = image_vectors(model, features, test, args.queries, args.seed + 1)
    print(f"{len(vectors):,} + {len(queries)} vectors in {time.perf_counter() - started:.0f} s")
    np.save(args.out / "vectors.npy", vectors.astype(np.float32))
    np.save(args.out / "queries.npy", queries.astype(np.float32))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
