"""polymodal's training and prediction speed against a minimal hand-written PyTorch loop.

Same network (built from the same fitted schema), same batches, same optimiser settings and
AdamW kernel (polymodal's choice, `adamw_kernel`: fused where torch has one), one process.
Augmentation and modality dropout are off on both sides so the work is identical.
`--hand-kernel foreach` gives the hand loop the kernel that polymodal used before (and that
is faster on a CPU than torch's default there, a loop over the weights).

    .venv/bin/python benchmarks/throughput.py [--rows 3000] [--epochs 6] [--rounds 5]

This machine's speed drifts from minute to minute (a shared VM), so the two sides alternate:
each round trains polymodal (Lightning) and the hand loop, the first of the two changing from
round to round, and the ratio is taken within the round; the median over rounds is the figure.
Predictions alternate call by call. Epochs 2 to `--epochs` are timed (the first pays one-time
costs on both sides), each from its start to the next one's (the last to the end of training).
polymodal has glibc's malloc keep freed memory for reuse (`machine.reuse_freed_memory`,
process-wide), so the hand loop, in the same process, runs under the same setting; the page
faults of a prediction pass are printed for both sides.

Uses ../shared/datasets/avmnist when present, else generated shapes-and-tones data.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import DATASETS, ROOT, machine

sys.path.insert(0, str(ROOT / "src"))

from polymodal.config import Config, TargetConfig  # noqa: E402
from polymodal.data.cache import FeatureCache  # noqa: E402
from polymodal.data.features import encode_inputs, fit_schema  # noqa: E402
from polymodal.data.problems import ProblemLog  # noqa: E402
from polymodal.data.table import read_table  # noqa: E402
from polymodal.network import MultimodalNet  # noqa: E402
from polymodal.tasks import encode_targets  # noqa: E402
from polymodal.training.batches import TensorBatches, to_tensors  # noqa: E402
from polymodal.training.budget import LearningRateShape  # noqa: E402
from polymodal.training.fit import (  # noqa: E402
    cuda_checked_once,
    train_network,
    trainer_precision,
)
from polymodal.training.module import PolymodalModule, adamw_kernel  # noqa: E402

AVMNIST = DATASETS / "avmnist" / "avmnist.csv"


def load_data(rows: int):
    if AVMNIST.is_file():
        table = read_table(AVMNIST)
        table = table.subset(np.flatnonzero(table.frame["split"] == "train")[:rows])
        return table, ["image", "audio"], "AV-MNIST"
    from polymodal.demo import make_demo_data

    path = make_demo_data(Path(tempfile.mkdtemp()) / "demo", rows=rows)
    return read_table(path), ["image", "sound"], "generated shapes and tones"


def hand_written_epochs(net, batches, valid, settings, epochs: int, kernel: str = "") -> float:
    """The loop a person would write: zero_grad, forward, loss, backward, clip, step; in bf16
    autocast where polymodal trains in bf16, so both sides do the same arithmetic. `kernel`:
    AdamW's ("fused", "foreach"); default polymodal's."""
    module = PolymodalModule(net, settings, LearningRateShape(1))  # only for its loss function
    weights = list(net.parameters())
    optimizer = torch.optim.AdamW(
        weights,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        **({kernel: True} if kernel else adamw_kernel(weights)),
    )
    bf16 = trainer_precision(settings.precision) == "bf16-mixed"
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    started = time.perf_counter()
    for _ in range(epochs):
        net.train()
        for batch in batches:
            hand_written_step(net, module, optimizer, autocast, batch)
        net.eval()
        with torch.no_grad(), autocast:
            for batch in valid:
                net(batch["inputs"])
    return time.perf_counter() - started


def hand_written_step(net, module, optimizer, autocast, batch: dict, forward=None) -> None:
    """One training step as a person writes it: zero_grad, forward, loss, backward, clip,
    step. `forward` (default: `net`) may be a compiled `net`."""
    optimizer.zero_grad(set_to_none=True)
    with autocast:
        loss = module.combined_loss((forward or net)(batch["inputs"]), batch["targets"])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    optimizer.step()


def predict_rows_per_second(net, inputs, rows: int, batch_size: int = 256) -> float:
    batches = TensorBatches(inputs, None, np.arange(rows), batch_size)
    net.eval()
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            net(batch["inputs"])
    return rows / (time.perf_counter() - started)


def page_faults() -> int:
    """Page faults this process has taken so far (those served without reading a disk)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=6, help="the first one is not timed")
    parser.add_argument("--rounds", type=int, default=5, help="training rounds; median ratio")
    parser.add_argument("--predict-repeats", type=int, default=11, help="median of this many")
    parser.add_argument(
        "--hand-kernel", choices=["fused", "foreach"], default="", help="default: polymodal's"
    )
    args = parser.parse_args()
    os.environ.setdefault("POLYMODAL_PROGRESS", "0")

    table, inputs, name = load_data(args.rows)
    config = Config(targets=[TargetConfig(column="label")], inputs=inputs)
    config.train.augment = False
    config.train.modality_dropout = 0.0
    config.train.max_epochs = args.epochs
    config.train.patience = args.epochs + 1
    train_rows = np.arange(len(table) - 64)
    valid_rows = np.arange(len(table) - 64, len(table))
    schema = fit_schema(table, train_rows, config)
    features = to_tensors(encode_inputs(schema, table, ProblemLog(), FeatureCache()))
    targets = {
        k: (torch.from_numpy(v), torch.from_numpy(m))
        for k, (v, m) in encode_targets(schema.targets, table).items()
    }
    settings = config.train.for_rows(len(train_rows))  # polymodal's batch and learning rate
    size = settings.batch_size

    batches = TensorBatches(features, targets, train_rows, size, shuffle=True)
    valid = TensorBatches(features, targets, valid_rows, 256)
    timed_rows = len(train_rows) * (args.epochs - 1)  # epoch 0 pays one-time costs: not timed
    polymodal_rates, hand_rates = [], []

    def train_polymodal() -> None:
        torch.manual_seed(0)
        net = MultimodalNet(schema, config.model)
        with tempfile.TemporaryDirectory() as workdir:
            result = train_network(net, batches, valid, settings, Path(workdir))
        polymodal_rates.append(timed_rows / sum(row["seconds"] for row in result.history[1:]))

    def train_by_hand() -> MultimodalNet:
        torch.manual_seed(0)
        hand_net = MultimodalNet(schema, config.model)
        # without Lightning's NVML check at every step, as in a process that never imports it
        with cuda_checked_once():
            hand_written_epochs(hand_net, batches, valid, settings, 1, args.hand_kernel)  # warm-up
            hand_seconds = hand_written_epochs(
                hand_net, batches, valid, settings, args.epochs - 1, args.hand_kernel
            )
        hand_rates.append(timed_rows / hand_seconds)
        return hand_net

    for index in range(args.rounds):  # who goes first alternates: a drift hits both alike
        if index % 2 == 0:
            train_polymodal()
            hand_net = train_by_hand()
        else:
            hand_net = train_by_hand()
            train_polymodal()
    ratios = [ours / hand for ours, hand in zip(polymodal_rates, hand_rates, strict=True)]

    from polymodal.model import Model

    model = Model(config=config)
    model.schema_, model.net_ = schema, hand_net  # the same weights on both sides
    predict_rows_per_second(hand_net, features, 256)  # warm-up, as for Model.predict below
    model.predict(table.subset(np.arange(256)))
    hand_predicts, poly_predicts, hand_faults, poly_faults = [], [], [], []
    for _ in range(args.predict_repeats):  # interleaved, so a slow moment hits both sides
        faults = page_faults()
        hand_predicts.append(predict_rows_per_second(hand_net, features, len(table)))
        hand_faults.append(page_faults() - faults)
        faults, started = page_faults(), time.perf_counter()
        model.predict(table)  # from the table: cached features, batching, output frame
        poly_predicts.append(len(table) / (time.perf_counter() - started))
        poly_faults.append(page_faults() - faults)
    hand_predict, poly_predict = float(np.median(hand_predicts)), float(np.median(poly_predicts))

    print(machine())
    precision = trainer_precision(settings.precision)
    print(f"data: {name}, {len(train_rows)} training rows, inputs {inputs}, batch {size}")
    print(f"precision: {precision} on both sides")
    kernel = next(iter(adamw_kernel(list(hand_net.parameters()))))
    print(f"AdamW kernel: polymodal {kernel}, hand-written loop {args.hand_kernel or kernel}")
    for index, (ours, hand) in enumerate(zip(polymodal_rates, hand_rates, strict=True)):
        print(
            f"training round {index + 1}     samples/s polymodal (Lightning) {ours:8.1f}, "
            f"hand-written loop {hand:8.1f}: ratio {ours / hand:.3f}"
        )
    print(f"training ratio       polymodal / hand      {float(np.median(ratios)):8.3f}  (median)")
    print(
        f"predict rows/s       Model.predict(table)  {poly_predict:8.1f}  (features cached; median of {args.predict_repeats})"
    )
    print(
        f"predict rows/s       hand-written loop     {hand_predict:8.1f}  (tensors in memory; median of {args.predict_repeats})"
    )
    print(f"predict ratio        polymodal / hand      {poly_predict / hand_predict:8.3f}")
    print(
        f"page faults a pass   polymodal {np.median(poly_faults):.0f}, "
        f"hand-written loop {np.median(hand_faults):.0f}  (median)"
    )


if __name__ == "__main__":
    main()
