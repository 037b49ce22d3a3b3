"""Sampling speed of an image target: images per second at 32 steps, by guidance and batch.

    .venv/bin/python benchmarks/sampling_speed.py [--steps 32] [--batches 1,16,64] [--seconds 5]
        [--threads N]

The network is built **untrained** (sampling speed does not depend on the weights) from an
MNIST-sized table made here: 28x28 grey images and a ten-class label, the label conditioning
the image, with the default options (the default `Config` model and the image target's
defaults: U-Net width 32, 4 attention heads). Guidance 0 and 1 cost one U-Net pass a step;
any other guidance (2, the default) costs two. Each batch size and guidance is timed after one
untimed call, repeated until `--seconds` have passed, in 32-bit as predictions run; on the GPU
too when CUDA is available.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import ROOT, machine
from PIL import Image

sys.path.insert(0, str(ROOT / "src"))

from polymodal.config import Config, TargetConfig  # noqa: E402
from polymodal.data.cache import FeatureCache  # noqa: E402
from polymodal.data.features import encode_inputs, fit_schema  # noqa: E402
from polymodal.data.problems import ProblemLog  # noqa: E402
from polymodal.data.table import read_table  # noqa: E402
from polymodal.network import MultimodalNet  # noqa: E402
from polymodal.training.batches import TensorBatches, to_tensors  # noqa: E402

ROWS, SIDE, GUIDANCES = 100, 28, (0.0, 1.0, 2.0)


def mnist_sized_table(folder: Path) -> Path:
    """100 rows: a label 0-9 and a 28x28 grey PNG of noise (the pixels do not matter here)."""
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True)
    for row in range(ROWS):
        pixels = rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "img" / f"{row}.png")
    path = folder / "digits.csv"
    frame = pd.DataFrame({"label": [str(r % 10) for r in range(ROWS)]})
    frame["image"] = [f"img/{row}.png" for row in range(ROWS)]
    frame.to_csv(path, index=False)
    return path


def untrained_network(data: Path) -> tuple[MultimodalNet, dict]:
    """The default network for `label -> image` (untrained), and every row's input features."""
    config = Config()
    config.targets = [TargetConfig(column="image", task="image")]
    table = read_table(data)
    schema = fit_schema(table, np.arange(ROWS), config)
    features = encode_inputs(schema, table, ProblemLog(), FeatureCache(enabled=False))
    return MultimodalNet(schema, config.model).eval(), to_tensors(features)


def images_per_second(
    net: MultimodalNet, features: dict, batch: int, guidance: float, steps: int, seconds: float
) -> float:
    """Images sampled per second for batches of `batch` rows on the network's device."""
    device = next(net.parameters()).device
    rows = np.arange(batch) % ROWS
    inputs = next(iter(TensorBatches(features, None, rows, batch)))["inputs"]
    inputs = {name: {k: v.to(device) for k, v in item.items()} for name, item in inputs.items()}
    net.tasks[0].set_decoding({"guidance": guidance, "steps": steps})
    made, spent = 0, 0.0
    with torch.inference_mode():
        net(inputs)  # untimed: first-call allocations, kernel selection
        while spent < seconds:
            started = time.perf_counter()
            net(inputs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            spent += time.perf_counter() - started
            made += batch
    return made / spent


def report(
    net: MultimodalNet, features: dict, batches: list[int], steps: int, seconds: float
) -> None:
    device = next(net.parameters()).device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n{name}: images per second at {steps} steps")
    print(f"{'batch':>6} {'guidance':>9} {'passes/step':>12} {'images/s':>9}")
    for batch in batches:
        for guidance in GUIDANCES:
            speed = images_per_second(net, features, batch, guidance, steps, seconds)
            passes = 1 if guidance in (0.0, 1.0) else 2
            print(f"{batch:>6} {guidance:>9g} {passes:>12} {speed:>9.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batches", default="1,16,64", help="batch sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed per measurement")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    print(machine())
    with tempfile.TemporaryDirectory(prefix="sampling-speed-") as folder:
        net, features = untrained_network(mnist_sized_table(Path(folder)))
    task = net.tasks[0]
    print(
        f"untrained label -> image network, image {task.image.size}x{task.image.size}x"
        f"{task.image.channels}, U-Net width {task.image.width}, {task.image.heads} heads, "
        f"{sum(p.numel() for p in net.parameters()):,} parameters"
    )
    started = time.perf_counter()
    report(net, features, batches, args.steps, args.seconds)
    if torch.cuda.is_available():
        report(net.to("cuda"), features, batches, args.steps, args.seconds)
    else:
        print("\nno CUDA device: GPU not measured")
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
