"""Training-step speed of the default AV-MNIST network by memory layout and precision.

    .venv/bin/python benchmarks/step_speed.py [--rows 3000] [--steps 40] [--rounds 3] [--compile]

The same network (same seed, same fitted schema), the same batches and optimiser; only the
layout of the from-scratch CNNs (channels-last, polymodal's default, against PyTorch's NCHW)
and the precision (bf16 autocast where the CPU has it, and 32-bit, which is what a CPU without
bf16 runs) change. Each configuration times `--steps` steps after 5 untimed ones; the
configurations alternate for `--rounds` rounds, so a slow minute of the machine hits them all,
and the median is printed. `--compile` also times `torch.compile(net)`, its first steps apart.

Uses ../shared/datasets/avmnist when present, else generated shapes-and-tones data.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
from common import ROOT, machine
from throughput import hand_written_step, load_data

sys.path.insert(0, str(ROOT / "src"))

from polymodal.config import Config, TargetConfig  # noqa: E402
from polymodal.data.cache import FeatureCache  # noqa: E402
from polymodal.data.features import encode_inputs, fit_schema  # noqa: E402
from polymodal.data.problems import ProblemLog  # noqa: E402
from polymodal.encoders.base import ChannelsLastCNN  # noqa: E402
from polymodal.network import MultimodalNet  # noqa: E402
from polymodal.tasks import encode_targets  # noqa: E402
from polymodal.training.batches import TensorBatches, to_tensors  # noqa: E402
from polymodal.training.budget import LearningRateShape  # noqa: E402
from polymodal.training.fit import cpu_computes_bf16  # noqa: E402
from polymodal.training.module import PolymodalModule  # noqa: E402

WARMUP_STEPS = 5


def to_nchw(net: MultimodalNet) -> None:
    """Put every channels-last CNN of `net` back in PyTorch's default layout (NCHW)."""
    for module in net.modules():
        if isinstance(module, ChannelsLastCNN):
            module.to(memory_format=torch.contiguous_format)
            module.forward = lambda x, m=module: torch.nn.Sequential.forward(m, x.contiguous())


def steps_per_second(
    schema, config, batches: list, layout: str, bf16: bool, steps: int, compiled: bool = False
) -> tuple[float, float]:
    """(samples/s over `steps` timed steps, seconds of the untimed first steps)."""
    torch.manual_seed(0)
    net = MultimodalNet(schema, config.model)
    if layout == "NCHW":
        to_nchw(net)
    module = PolymodalModule(net, config.train, LearningRateShape(1))
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay, foreach=True
    )
    forward = torch.compile(net) if compiled else net
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def step(batch: dict) -> None:
        hand_written_step(net, module, optimizer, autocast, batch, forward)

    started = time.perf_counter()
    for batch in batches[:WARMUP_STEPS]:
        step(batch)
    first = time.perf_counter() - started
    timed = batches[WARMUP_STEPS : WARMUP_STEPS + steps]
    started = time.perf_counter()
    for batch in timed:
        step(batch)
    samples = sum(len(batch["targets"]["label"][0]) for batch in timed)
    return samples / (time.perf_counter() - started), first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("POLYMODAL_PROGRESS", "0")

    table, inputs, name = load_data(args.rows)
    config = Config(targets=[TargetConfig(column="label")], inputs=inputs)
    config.train.augment, config.train.modality_dropout = False, 0.0
    rows = np.arange(len(table))
    config.train = config.train.for_rows(len(rows))  # polymodal's batch and learning rate
    schema = fit_schema(table, rows, config)
    features = to_tensors(encode_inputs(schema, table, ProblemLog(), FeatureCache()))
    targets = {
        k: (torch.from_numpy(v), torch.from_numpy(m))
        for k, (v, m) in encode_targets(schema.targets, table).items()
    }
    size = config.train.batch_size
    batches = list(TensorBatches(features, targets, rows, size, shuffle=True))
    if len(batches) < WARMUP_STEPS + args.steps:
        sys.exit(f"--rows {args.rows} gives {len(batches)} batches; need {5 + args.steps}")

    precisions = [True, False] if cpu_computes_bf16() else [False]
    configurations = [(layout, bf16) for bf16 in precisions for layout in ("NCHW", "NHWC")]
    rates: dict[tuple[str, bool], list[float]] = {c: [] for c in configurations}
    for _ in range(args.rounds):
        for layout, bf16 in configurations:
            rate, _ = steps_per_second(schema, config, batches, layout, bf16, args.steps)
            rates[(layout, bf16)].append(rate)

    print(machine())
    print(f"data: {name}, inputs {inputs}, batch {size}, {args.steps} timed steps per run")
    for bf16 in precisions:
        precision = "bf16 autocast" if bf16 else "32-bit"
        nchw = float(np.median(rates[("NCHW", bf16)]))
        nhwc = float(np.median(rates[("NHWC", bf16)]))
        print(f"{precision:14s} NCHW {nchw:8.1f} samples/s   channels-last {nhwc:8.1f} samples/s")
        print(f"{precision:14s} channels-last / NCHW {nhwc / nchw:.3f}  (median of {args.rounds})")
    if args.compile:
        bf16 = precisions[0]
        rate, first = steps_per_second(schema, config, batches, "NHWC", bf16, args.steps, True)
        print(f"torch.compile  first {WARMUP_STEPS} steps {first:.1f} s, then {rate:.1f} samples/s")


if __name__ == "__main__":
    main()
