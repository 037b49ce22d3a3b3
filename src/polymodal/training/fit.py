"""The training recipe: Lightning's Trainer with early stopping, checkpoints and resume."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.plugins.io import AsyncCheckpointIO
from torch.utils.data import DataLoader

from polymodal.config import TrainSettings
from polymodal.machine import fit_torch_threads_to_cores, reuse_freed_memory, usable_cores
from polymodal.network import MultimodalNet
from polymodal.progress import progress_enabled
from polymodal.terminal import quiet_lightning
from polymodal.training.budget import Budget, LearningRateShape
from polymodal.training.distributed import check_strategy, external_launcher
from polymodal.training.module import PolymodalModule
from polymodal.training.processes import stopped_run, training_strategy

CHECKPOINTS = ".checkpoints"  # inside the output folder; removed once the model is saved
LAST_NAME = "last"
LAST_CHECKPOINT = f"{CHECKPOINTS}/{LAST_NAME}.ckpt"
# from here on a checkpoint (with AdamW's two moments: 12 bytes a weight) is some 300 MB
ASYNC_CHECKPOINTS_FROM_WEIGHTS = 25_000_000
STEPS_PER_CALL = 8  # optimiser steps per training_step call (StepGroups)


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("nan")
    seconds: float = 0.0
    stop_reason: str = "epochs"  # plateau | epochs | time: what started the final decay


class History(Callback):
    """Records each epoch's metrics and duration (for learning curves and the report).

    An epoch's seconds run from its start to the next epoch's start (the last one's to the
    end of training), so they hold everything the user waits for: validation, checkpoints and
    early stopping, which Lightning runs after this callback's epoch-end hook."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []
        self._open: tuple[int, float] | None = None  # (epoch, its start) until it is closed

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._close_epoch()
        self._open = (trainer.current_epoch, time.perf_counter())

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """Runs after the epoch's validation, so val_score is this epoch's."""
        started = self._open[1] if self._open else time.perf_counter()
        row = {"epoch": trainer.current_epoch, "seconds": time.perf_counter() - started}
        for key in ("train_loss", "val_loss", "val_score"):
            if key in trainer.callback_metrics:
                row[key] = float(trainer.callback_metrics[key])
        if getattr(module, "rows_per_process", None):
            row["train_rows"] = list(module.rows_per_process)  # one count per process
        self.epochs.append(row)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._close_epoch()

    def _close_epoch(self) -> None:
        """The open epoch's seconds up to now, if it finished (one stopped by `max_time`
        halfway has no row)."""
        if self._open and self.epochs and self.epochs[-1]["epoch"] == self._open[0]:
            self.epochs[-1]["seconds"] = time.perf_counter() - self._open[1]
        self._open = None


def parse_max_time(value: str | None) -> str | None:
    """Minutes ('10', '2.5') or Lightning's DD:HH:MM:SS."""
    if value is None or ":" in value:
        return value
    seconds = int(float(value) * 60)
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def warmup_steps(settings: TrainSettings, steps_per_epoch: int) -> int:
    """`warmup_epochs` of steps, but never more than a tenth of the epoch cap."""
    cap = 0.1 * settings.max_epochs * steps_per_epoch
    return max(1, round(min(settings.warmup_epochs * steps_per_epoch, cap)))


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (AMX or AVX512-BF16): there bf16 mixed
    precision trains about 15% faster; elsewhere it would be emulated, and slower."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def trainer_precision(setting: str) -> str:
    """bf16 mixed precision where the hardware computes bf16 (auto) or when asked; else 32-bit."""
    if setting != "auto":
        return "bf16-mixed" if setting == "bf16" else "32-true"
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_computes_bf16() else "32-true"


def share_cores(settings: TrainSettings) -> None:
    """No more torch threads than usable cores (a container's CPU limit counts), and processes
    training on one machine's CPU split them: each with all of them would run twice as many
    threads as cores, and spend the time waiting for each other. A process started by a
    `Launcher` (Ray Train) keeps the threads its launcher gave it."""
    if external_launcher() is not None:
        return
    fit_torch_threads_to_cores()
    if settings.devices > 1 and not torch.cuda.is_available():
        torch.set_num_threads(max(1, usable_cores() // settings.devices))


NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


@contextmanager
def cuda_checked_once() -> Iterator[None]:
    """Inside the block, torch answers "is CUDA available?" from its cached count where NVML
    finds no GPU.

    Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 when imported, so that its own checks do not
    initialise CUDA in a process it may fork. With it, torch asks NVML again at every optimiser
    step (AdamW's graph-capture check), loading the library each time: 0.15-0.2 ms a step,
    about 1 % of the default AV-MNIST step on 2 CPU cores (profiled). Without a GPU there is
    nothing for a fork to inherit, and CUDA's own count, cached after its first call, says so.
    """
    if os.environ.get(NVML_CHECK) != "1" or torch.cuda.is_available():
        yield
        return
    os.environ[NVML_CHECK] = "0"
    try:
        yield
    finally:
        os.environ[NVML_CHECK] = "1"


def processes_of(settings: TrainSettings) -> dict:
    """The Trainer's devices, num_nodes, strategy and plugins: those of the framework that
    started this process if one did (Ray Train), else polymodal's own for the settings."""
    launcher = external_launcher()
    if launcher is not None:
        return launcher.trainer_options(settings)
    return {
        "devices": settings.devices,
        "num_nodes": settings.num_nodes,
        "strategy": training_strategy(settings),
        "plugins": [],
    }


def train_network(
    net: MultimodalNet,
    train: DataLoader,
    valid: DataLoader,
    settings: TrainSettings,
    workdir: Path,
    resume: bool = False,
) -> TrainResult:
    """Fit `net` in place; on return it holds the weights of the best validation epoch."""
    check_strategy(settings)
    L.seed_everything(settings.seed, workers=True, verbose=False)
    share_cores(settings)
    reuse_freed_memory()
    checkpoints = workdir / CHECKPOINTS
    last = workdir / LAST_CHECKPOINT
    shape = LearningRateShape(warmup_steps(settings, len(train)))
    module = PolymodalModule(net, settings, shape)
    budget = Budget(
        shape,
        steps_per_epoch=len(train),
        patience=settings.patience,
        cooldown_fraction=settings.cooldown_fraction,
        max_epochs=settings.max_epochs,
    )
    averaging = weight_averaging(net)
    # The best epoch's weights, read back when training ends (--resume finds the record of it
    # in last.ckpt). Weights only, a third of a whole checkpoint with AdamW's two moments,
    # unless Lightning's moving average of the weights is kept: it puts the averaged weights
    # in only through a whole checkpoint.
    best = ModelCheckpoint(
        dirpath=checkpoints,
        filename="best",
        monitor="val_score",
        mode="max",
        save_weights_only=not averaging,
    )
    # after `best` in the list, so that its record of the best epoch is in the file
    latest = ResumableState(checkpoints, settings.checkpoint_seconds)
    history = History()
    quiet_lightning()  # after Lightning's import, which sets its loggers to INFO
    placement = processes_of(settings)
    trainer = L.Trainer(
        max_epochs=settings.max_epochs,
        max_time=parse_max_time(settings.max_time),
        accelerator="auto",
        devices=placement["devices"],
        num_nodes=placement["num_nodes"],
        strategy=placement["strategy"],
        # each process already holds its share of the training rows (training/datamodule.py),
        # and every process validates on all rows, so all agree on the score and the stop
        use_distributed_sampler=False,
        callbacks=[budget, best, latest, history, *averaging],
        logger=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=progress_enabled(),
        precision=trainer_precision(settings.precision),
        plugins=[*checkpoint_writer(net), *placement["plugins"]],
    )
    launcher = external_launcher()
    if launcher is not None:
        trainer = launcher.prepare(trainer)
    started = time.perf_counter()
    try:
        with cuda_checked_once():
            trainer.fit(
                compiled(module, settings),
                StepGroups(train, steps_per_call(averaging)),
                valid,
                ckpt_path=str(last) if resume and last.is_file() else None,
            )
    except Exception as error:
        stopped = stopped_run(trainer, error, workdir, last)
        if stopped is None:
            raise
        raise stopped from None
    result = TrainResult(
        history=history.epochs,
        seconds=time.perf_counter() - started,
        stop_reason=budget.stop_reason or "epochs",
    )
    if best.best_model_path and trainer.is_global_zero:  # the others write nothing
        load_weights_from_checkpoint(net, Path(best.best_model_path))
        result.best_score = float(best.best_model_score)
        scores = [row.get("val_score", float("-inf")) for row in history.epochs]
        result.best_epoch = int(history.epochs[scores.index(max(scores))]["epoch"]) if scores else 0
    return result


class ResumableState(ModelCheckpoint):
    """last.ckpt, the whole state that `--resume` goes on from (weights, AdamW's moments, the
    schedule, the loops), written at the end of an epoch once `seconds` have passed since the
    last write, and after the first and the final epoch. (Lightning's `save_last` writes it only
    in an epoch that wrote another checkpoint, i.e. one whose score improved.)

    Not after every epoch: AV-MNIST's state (1.75 MB, 190 tensors) takes 7 ms to write, about
    1 % of an epoch on 2 CPU cores, mostly pickling each tensor's description; a hard stop
    loses at most `seconds` of training (plus the epoch under way) instead."""

    def __init__(self, folder: Path, seconds: float) -> None:
        super().__init__(
            dirpath=folder,
            filename=LAST_NAME,
            enable_version_counter=False,
            save_on_train_epoch_end=True,  # after Budget's hook, which may end training
        )
        self.seconds = seconds
        self._written_at: float | None = None  # time.monotonic() of the last write

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._due(trainer):
            super().on_train_epoch_end(trainer, module)

    def _due(self, trainer: L.Trainer) -> bool:
        """Whether to write now; the same answer in every process (each write waits for all)."""
        final = trainer.should_stop or trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
        waited = self._written_at is None or time.monotonic() - self._written_at >= self.seconds
        return bool(trainer.strategy.broadcast(final or waited))

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._written_at = time.monotonic()


class StepGroups:
    """The training batches `steps` at a time, each group one `training_step` call that steps
    the optimiser once per batch (as Keras' `steps_per_execution`).

    Lightning's loop costs about 0.6 ms a call outside the step itself and the batches'
    fetch (hooks, progress counters, its call plumbing; timed in place), some 4 % of a 13 ms
    AV-MNIST step on 2 CPU cores; shared by 8 steps, an eighth of that (epochs 1 % shorter
    than with 4, median of 8 alternating runs). Lightning's progress bar counts calls;
    `trainer.global_step` still counts optimiser steps."""

    def __init__(self, batches: Iterable, steps: int) -> None:
        self.batches = batches
        self.steps = steps

    def __len__(self) -> int:
        return -(-len(self.batches) // self.steps)

    def __iter__(self) -> Iterator[list]:
        group = []
        for batch in self.batches:
            group.append(batch)
            if len(group) == self.steps:
                yield group
                group = []
        if group:
            yield group


def steps_per_call(averaging: list[Callback]) -> int:
    """`STEPS_PER_CALL`, or 1 where Lightning's moving average of the weights is kept: it
    updates once a call, and its decay is set per optimiser step."""
    return 1 if averaging else STEPS_PER_CALL


def checkpoint_writer(net: MultimodalNet) -> list[AsyncCheckpointIO]:
    """Lightning's AsyncCheckpointIO, which writes checkpoints on a thread while the next
    epoch trains (the tensors copied first; Lightning waits for the last write before `fit`
    returns), where that pays: on a GPU, whose host cores are otherwise idle, and for large
    networks, whose writes wait on the disk. Else none: training on the CPU keeps every core
    busy, and the copy and the thread cost more than writing in the loop (AV-MNIST's network,
    141,000 weights: epochs 1.3 % slower with it on 2 cores, measured)."""
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    if torch.cuda.is_available() or trainable >= ASYNC_CHECKPOINTS_FROM_WEIGHTS:
        return [AsyncCheckpointIO()]
    return []


def weight_averaging(net: MultimodalNet) -> list[Callback]:
    """Lightning's moving average of the weights when a task asks for one (the slowest decay
    asked for). Validation, checkpoints and so the weights saved are the averaged ones."""
    decay = max((task.weight_averaging for task in net.tasks), default=0.0)
    return [EMAWeightAveraging(decay=decay)] if decay else []


def compiled(module: L.LightningModule, settings: TrainSettings) -> L.LightningModule:
    """`torch.compile` of the module with `train.compile`. Lightning unwraps a compiled module
    for its checkpoints, and the compiled one shares the module's parameters, so the weights
    trained and saved are `net`'s either way."""
    return torch.compile(module) if settings.compile else module


def load_weights_from_checkpoint(net: MultimodalNet, path: Path) -> None:
    """The network's weights from a Lightning checkpoint (tensors only, no pickled objects)."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    weights = {key.removeprefix("net."): value for key, value in state.items()}
    missing, unexpected = net.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - net.frozen_state_names():  # only frozen ones are left out
        raise RuntimeError(f"{path} does not match the network: {unexpected or missing}")


def remove_checkpoints(workdir: Path) -> None:
    shutil.rmtree(workdir / CHECKPOINTS, ignore_errors=True)
