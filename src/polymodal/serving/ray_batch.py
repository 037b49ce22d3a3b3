"""`predict --engine ray` and `embed --engine ray`: the table in shards, run by Ray actors.

The driver reads the table in the same chunks as the single-process path (`read_chunks`);
each chunk becomes one shard, a row of a Ray Data dataset holding the chunk's frame. Tables
hold paths and small values, so this is light; the heavy part, decoding the media and running
the network, happens in the actors: `map_batches` over `ShardPredictor`, one shard per call,
each actor loading the model once. An actor formats its shard's CSV lines itself through
`predict_shard`, the function the single-process path calls, so the file is the same byte for
byte. With `preserve_order` the driver receives the shards in table order and appends them as
`write_shards` does for one process (flushed and synced per shard), which is what lets
`--resume` continue per shard. A killed actor is restarted by Ray and its shard retried.
`embed` goes the same way with `ShardEmbedder`, in shards of whole forward batches, and the
driver writes the vectors once all are back, as `embed` does.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import math
import pickle
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from polymodal.data.problems import BadInputError, Problem, ProblemLog
from polymodal.data.table import Table, read_table
from polymodal.model import PREDICT_BATCH, Model, without_other_inputs
from polymodal.search.embeddings import Embedded, kept_rows
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
EMBED_SHARD = 4 * PREDICT_BATCH  # whole forward batches, so each vector is the one-process one


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
    import_ray()
    decoding = decoding or {}
    model = Model.load(model_dir).set_decoding(**decoding)  # for the header, and to fail early
    done = open_output(output_header(model), data, output, resume=resume, overwrite=overwrite)
    del model
    shards = pickled(read_chunks(data, chunk_size, skip=done))
    if not shards:  # nothing left to predict: no cluster needed
        return write_shards([], data, output, done, console, on_chunk)
    settings = actor_settings(model_dir, data, decoding=decoding)
    with ray_session(address) as ray:
        rows = map_shards(ray, ShardPredictor, shards, settings, workers)
        predicted = (Shard(int(row["rows"]), row["text"], problems_of(row)) for row in rows)
        return write_shards(predicted, data, output, done, console, on_chunk)


def embed_on_ray(
    model_dir: Path, data: Path, column: str, *, address: str | None, workers: int | None
) -> Embedded:
    """`embed_rows` on a Ray cluster: the table in shards of whole forward batches, one
    actor call each, the vectors put back together in table order."""
    import_ray()
    table = read_table(data)
    without_other_inputs(table, Model.load(model_dir).schema_, column)  # an unknown column
    frame = table.frame
    shards = pickled(
        (start, frame.iloc[start : start + EMBED_SHARD])
        for start in range(0, len(frame), EMBED_SHARD)
    )
    settings = actor_settings(model_dir, data, column=column)
    with ray_session(address) as ray:
        rows = list(map_shards(ray, ShardEmbedder, shards, settings, workers))
    log = ProblemLog(table=table.name)
    for row in rows:
        log.problems += problems_of(row)
    vectors = np.concatenate([np.load(io.BytesIO(row["vectors"])) for row in rows])
    return kept_rows(table, vectors, log)


# ------------------------------------------------------------------------ Ray
def import_ray() -> Any:
    """Ray is an optional dependency (the `scale` extra): imported only when asked for."""
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None:
        raise BadInputError(f"--engine ray needs Ray Data: {INSTALL}")
    import ray

    if importlib.util.find_spec("ray.data") is None:
        raise BadInputError(f"--engine ray needs Ray Data: {INSTALL}")
    return ray


@contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Join the cluster at `address`, or start a private one here, quietly; leave it after."""
    ray = import_ray()
    options: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is None:
        options["include_dashboard"] = False
    ray.init(address=address, **options)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # results come in table order
        context.enable_progress_bars = False  # the driver draws its own bar over rows
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        yield ray
    finally:
        ray.shutdown()


def node_cpus(ray: Any) -> list[int]:
    """The CPUs of each live node that has any (a head started with `--num-cpus 0` has none)."""
    cpus = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    return [count for count in cpus if count > 0] or [1]


def cpus_per_worker(cpus: list[int], workers: int) -> int:
    """CPUs Ray reserves per actor: the smallest node's cores shared by the actors it would
    hold, so that every actor fits on any node."""
    return max(1, min(cpus) // math.ceil(workers / len(cpus)))


def pickled(shards: Iterable[tuple[int, pd.DataFrame]]) -> list[dict]:
    """One dataset row per shard, its frame pickled: the actor gets the very frame the
    single-process path would predict (dtypes and all), not an Arrow round trip of it."""
    return [{"offset": offset, "frame": pickle.dumps(frame)} for offset, frame in shards]


def actor_settings(model_dir: Path, data: Path, **more: Any) -> dict[str, Any]:
    """What every actor needs: absolute paths, so it can run on any node sharing the files."""
    return {
        "model_dir": str(Path(model_dir).resolve()),
        "base_dir": str(data.parent.resolve()),
        "table": str(data),
        **more,
    }


def map_shards(
    ray: Any, actor: type, shards: list[dict], settings: dict[str, Any], workers: int | None
) -> Iterator[dict]:
    """Each shard's result row, in table order, as a pool of `actor`s finishes them. Empties
    `shards`: the dataset's blocks, in Ray's object store, hold them from then on."""
    cpus = node_cpus(ray)
    workers = workers or len(cpus)
    # Each actor runs as many torch threads as this process would: how a sum is split among
    # threads moves its last bits, and the file is to be the one-process file byte for byte.
    threads = torch.get_num_threads()
    dataset = ray.data.from_items(shards, override_num_blocks=len(shards)).map_batches(
        actor,
        fn_constructor_kwargs={**settings, "threads": threads},
        batch_size=1,  # one shard per call: rows go through the model in one-process batches
        batch_format="pandas",
        # Ray Data's actor pools restart a dead actor and retry its shard by default
        # (max_restarts=-1, max_task_retries=-1): a killed worker costs time, not rows.
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker(cpus, workers),
    )
    shards.clear()
    return dataset.iter_rows()


def problems_of(row: dict) -> list[Problem]:
    return [Problem(**problem) for problem in json.loads(row["problems"])]


# ------------------------------------------------------------------------ actors
class ShardActor:
    """A Ray actor's state: the model, loaded once; `shard` turns one shard into one row."""

    def __init__(
        self,
        model_dir: str,
        base_dir: str,
        table: str,
        threads: int,
        decoding: dict[str, Any] | None = None,
        column: str | None = None,
    ) -> None:
        torch.set_num_threads(threads)
        self.model = Model.load(model_dir).set_decoding(**(decoding or {}))
        self.base_dir, self.table, self.column = Path(base_dir), table, column

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        frames = [pickle.loads(frame) for frame in batch["frame"]]
        offsets = [int(offset) for offset in batch["offset"]]
        return pd.DataFrame([self.shard(*pair) for pair in zip(frames, offsets, strict=True)])

    def shard(self, frame: pd.DataFrame, offset: int) -> dict[str, Any]:
        raise NotImplementedError


class ShardPredictor(ShardActor):
    """Predictions of a shard, as the CSV lines `predict_shard` writes for one process."""

    def shard(self, frame: pd.DataFrame, offset: int) -> dict[str, Any]:
        shard = predict_shard(self.model, frame, offset, self.base_dir, self.table)
        return {"rows": shard.rows, "text": shard.text, "problems": as_json(shard.problems)}


class ShardEmbedder(ShardActor):
    """Vectors of a shard's `column` (NaN where it has none), as `Model.embed` gives them."""

    def shard(self, frame: pd.DataFrame, offset: int) -> dict[str, Any]:
        log = ProblemLog(table=self.table)
        table = Table(frame.reset_index(drop=True), self.base_dir, self.table)
        vectors = self.model.embed(table, column=self.column, log=log)
        buffer = io.BytesIO()
        np.save(buffer, vectors)
        problems = [replace(problem, row=problem.row + offset) for problem in log.problems]
        return {"rows": len(frame), "vectors": buffer.getvalue(), "problems": as_json(problems)}


def as_json(problems: list[Problem]) -> str:
    return json.dumps([asdict(problem) for problem in problems])
