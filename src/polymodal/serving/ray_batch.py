"""`polymodal predict --engine ray`: the chunks of `batch.py`, predicted by Ray actors.

The driver reads the table in the same chunks as the single-process path (`read_chunks`);
each chunk becomes one shard, a row of a Ray Data dataset holding the chunk's frame. Tables
hold paths and small values, so this is light; the heavy part, decoding the media and running
the network, happens in the actors: `map_batches` over `ShardPredictor`, one shard per call,
each actor loading the model once. An actor formats its shard's CSV lines itself through
`predict_shard`, the function the single-process path calls, so the file is the same byte for
byte. With `preserve_order` the driver receives the shards in table order and appends them as
`write_shards` does for one process (flushed and synced per shard), which is what lets
`--resume` continue per shard. A killed actor is restarted by Ray and its shard retried
(`max_restarts` and `max_task_retries`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import pickle
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from polymodal.data.problems import BadInputError, Problem
from polymodal.model import Model
from polymodal.serving.batch import (
    BatchResult,
    Shard,
    open_output,
    output_header,
    predict_shard,
    read_chunks,
    write_shards,
)

INSTALL = "pip install 'polymodal[scale]'"


def predict_on_ray(
    model_dir: Path,
    data: Path,
    output: Path,
    *,
    chunk_size: int = 1000,
    resume: bool = False,
    overwrite: bool = False,
    address: str | None = None,
    workers: int | None = None,
    decoding: dict[str, Any] | None = None,
    console: Console | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> BatchResult:
    """`predict_to_csv` on a Ray cluster (`address`; None starts one on this machine), with
    `workers` actors (default: one per node). Same output, same resume, same problems."""
    ray = import_ray()
    decoding = decoding or {}
    model = Model.load(model_dir).set_decoding(**decoding)  # for the header, and to fail early
    done = open_output(output_header(model), data, output, resume=resume, overwrite=overwrite)
    del model
    shards = [
        {"offset": offset, "frame": pickle.dumps(frame)}
        for offset, frame in read_chunks(data, chunk_size, skip=done)
    ]
    if not shards:  # nothing left to predict: no cluster needed
        return write_shards([], data, output, done, console, on_chunk)
    start_ray(ray, address)
    try:
        dataset = shard_dataset(ray, shards, model_dir, data, workers, decoding)
        del shards  # the dataset's blocks, in Ray's object store, hold them now
        return write_shards(ordered_shards(dataset), data, output, done, console, on_chunk)
    finally:
        ray.shutdown()


def import_ray() -> Any:
    """Ray is an optional dependency (the `scale` extra): imported only when asked for."""
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None:
        raise BadInputError(f"--engine ray needs Ray Data: {INSTALL}")
    import ray

    if importlib.util.find_spec("ray.data") is None:
        raise BadInputError(f"--engine ray needs Ray Data: {INSTALL}")
    return ray


def start_ray(ray: Any, address: str | None) -> None:
    """Join the cluster at `address`, or start a private one here; quietly either way."""
    options: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is None:
        options["include_dashboard"] = False
    ray.init(address=address, **options)
    from ray.data import DataContext

    context = DataContext.get_current()
    context.execution_options.preserve_order = True  # the driver writes in table order
    context.enable_progress_bars = False  # the driver draws its own bar over rows
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def node_cpus(ray: Any) -> list[int]:
    """The CPUs of each live node that has any (a head started with `--num-cpus 0` has none)."""
    cpus = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    return [count for count in cpus if count > 0] or [1]


def threads_per_worker(cpus: list[int], workers: int) -> int:
    """CPUs (and torch threads) per actor: the smallest node's cores shared by the actors it
    would hold, so that every actor fits on any node."""
    return max(1, min(cpus) // math.ceil(workers / len(cpus)))


def shard_dataset(
    ray: Any,
    shards: list[dict],
    model_dir: Path,
    data: Path,
    workers: int | None,
    decoding: dict[str, Any],
) -> Any:
    """The shards (one per block) mapped by a pool of `ShardPredictor` actors."""
    cpus = node_cpus(ray)
    workers = workers or len(cpus)
    threads = threads_per_worker(cpus, workers)
    return ray.data.from_items(shards, override_num_blocks=len(shards)).map_batches(
        ShardPredictor,
        fn_constructor_kwargs={
            "model_dir": str(Path(model_dir).resolve()),
            "base_dir": str(data.parent.resolve()),
            "table": str(data),
            "decoding": decoding,
            "threads": threads,
        },
        batch_size=1,  # one shard per call: rows are predicted in the single-process batches
        batch_format="pandas",
        # Ray Data's actor pools restart a dead actor and retry its shard by default
        # (max_restarts=-1, max_task_retries=-1): a killed worker costs time, not rows.
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=threads,
    )


def ordered_shards(dataset: Any) -> Iterator[Shard]:
    """The shards' predictions in table order (`preserve_order`), as the actors finish them."""
    for row in dataset.iter_rows():
        problems = [Problem(**problem) for problem in json.loads(row["problems"])]
        yield Shard(int(row["rows"]), row["text"], problems)


class ShardPredictor:
    """A Ray actor's work: load the model once, then predict shard after shard."""

    def __init__(
        self, model_dir: str, base_dir: str, table: str, decoding: dict[str, Any], threads: int
    ) -> None:
        import torch

        torch.set_num_threads(threads)
        self.model = Model.load(model_dir).set_decoding(**decoding)
        self.base_dir, self.table = Path(base_dir), table

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        results = []
        for offset, frame in zip(batch["offset"], batch["frame"], strict=True):
            shard = predict_shard(
                self.model, pickle.loads(frame), int(offset), self.base_dir, self.table
            )
            problems = json.dumps([asdict(problem) for problem in shard.problems])
            results.append({"rows": shard.rows, "text": shard.text, "problems": problems})
        return pd.DataFrame(results)
