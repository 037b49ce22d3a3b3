"""Several training processes (Lightning's DDP): which one this is, and its share of the rows.

Processes that Lightning's launcher starts from rank 0 (`--devices N`) train from the folder
rank 0 prepared before starting them; processes started together (torchrun, srun, Ray) prepare
their own copy (the feature cache makes the second decode cheap). Each trains on its share of
the training rows and validates on all of them, so every process reaches the same score and
the same decision to stop; only rank 0 writes the model.

The ranks come from the launcher's variables (srun, torchrun, Lightning's own), or from a
`Launcher` that started the process and knows them itself (Ray Train: `ray_train.py`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from polymodal.config import ConfigError, TrainSettings


class TrainingStopped(RuntimeError):
    """A training process stopped, so the whole run was stopped; the message says how to resume."""


@dataclass(frozen=True)
class Launcher:
    """A framework that started this training process and knows the ranks itself (Ray Train):
    `process_rank` and `process_count` ask it, and the Lightning Trainer takes its
    `trainer_options` (devices, num_nodes, strategy, plugins) in place of polymodal's own and
    is passed through its `prepare` once made."""

    rank: Callable[[], int]
    world_size: Callable[[], int]
    trainer_options: Callable[[TrainSettings], dict[str, Any]]
    prepare: Callable[[Any], Any] = lambda trainer: trainer


_launcher: Launcher | None = None  # set in each process such a framework started


@contextmanager
def started_by(launcher: Launcher) -> Iterator[None]:
    """Inside the block, this process is one of `launcher`'s training processes."""
    global _launcher
    previous, _launcher = _launcher, launcher
    try:
        yield
    finally:
        _launcher = previous


def external_launcher() -> Launcher | None:
    """The framework that started this training process, if one did (see `Launcher`)."""
    return _launcher


def process_rank(settings: TrainSettings) -> int:
    """This process's rank among the training processes, from the `Launcher` that started it
    or what the launcher set (srun, torchrun, or Lightning's own for `--devices`); 0 in a
    single process and in the process that starts the others. SLURM's comes first, as in
    Lightning's choice of environment."""
    if _launcher is not None:
        return _launcher.rank()
    if launched_by_srun():
        return int(os.environ["SLURM_PROCID"])
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    return int(os.environ.get("NODE_RANK", 0)) * settings.devices + local


def process_count(settings: TrainSettings) -> int:
    """Training processes in all: the `Launcher`'s count, else `devices` x `num_nodes`."""
    return _launcher.world_size() if _launcher is not None else settings.world_size


def launched_by_srun() -> bool:
    """Whether Lightning takes this process for one of an `srun` job's tasks (its
    SLURMEnvironment): SLURM_NTASKS set, in a job not named 'bash' or 'interactive' (those
    start the processes some other way)."""
    interactive = os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive")
    return "SLURM_NTASKS" in os.environ and "SLURM_PROCID" in os.environ and not interactive


def check_strategy(settings: TrainSettings) -> None:
    """FSDP only runs on GPUs: Lightning refuses it on any other accelerator, and torch's
    FullyShardedDataParallel says 'FSDP needs a non-CPU accelerator device' (torch 2.14)."""
    import torch

    if settings.strategy == "fsdp" and not torch.cuda.is_available():
        raise ConfigError(
            "--strategy fsdp needs GPUs (torch's FSDP does not run on CPUs) and this machine "
            "has none; use --strategy ddp"
        )


def rows_of_process(rows: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Every `world_size`-th training row from `rank`, all shares the same length (DDP needs
    the same number of steps in every process: at most world_size - 1 rows are left out)."""
    if world_size == 1:
        return rows
    share = len(rows) // world_size
    return np.asarray(rows)[rank::world_size][:share]


@contextmanager
def environment(name: str, value: str | None) -> Iterator[None]:
    """The environment variable `name` set to `value` (None: left as it is) inside the block."""
    if value is None:
        yield
        return
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
