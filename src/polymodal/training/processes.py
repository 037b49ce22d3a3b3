"""Starting the training processes, and stopping them all with one clear error when one dies.

Lightning's launcher for `--devices N` on one machine starts ranks 1..N-1 as child processes
and watches them with a thread that, up to 5 s after a child dies, SIGKILLs everything, itself
included: the user sees either no message at all or, when the launcher's next collective fails
first, a page of gloo traceback. Here the watching thread stops the other children and notes
which one died; the launcher's collective then fails (at once when the dead process's
connections close, or after `train.ddp_timeout` when one hangs) and `stopped_run` turns that
failure into `TrainingStopped`: one line naming the process and the checkpoint to resume from.
Launchers that start every process themselves (torchrun, srun) stop the others on their own.

The launcher and strategy classes below replace a private piece of Lightning's (its launcher's
process observer); they follow `lightning.pytorch.strategies.launchers.subprocess_script`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.distributed import _set_num_threads_if_needed
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, Strategy
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

from polymodal.config import TrainSettings
from polymodal.training.distributed import TrainingStopped

WATCH_SECONDS = 0.5  # how often the launcher looks at its children
LAST_RESORT_SECONDS = 30  # past the collective timeout, before a stuck launcher exits anyway


class ChildWatch(threading.Thread):
    """Watches the launcher's children: once one has exited with an error, it kills the others
    (SIGKILL: one waiting in a collective ignores SIGTERM)."""

    def __init__(self, children: list[subprocess.Popen], timeout: float) -> None:
        super().__init__(daemon=True, name="polymodal-child-watch")  # ends with the launcher
        self.children = children
        self.timeout = timeout
        self.done = threading.Event()  # set when the launcher's training returns or raises
        self.first_failure: tuple[int, int] | None = None

    def run(self) -> None:
        while not self.done.wait(WATCH_SECONDS):
            failed = self.failure()
            if failed:
                self.kill_children()
                self._last_resort(*failed)
                return
            if all(child.poll() == 0 for child in self.children):
                return

    def failure(self, wait: float = 0) -> tuple[int, int] | None:
        """(local rank, return code) of the first child seen to exit with an error, looking
        for up to `wait` seconds; None if none did. The first stays the answer: the others
        exit with errors too, once they are killed."""
        deadline = time.monotonic() + wait
        while self.first_failure is None:
            for rank, child in enumerate(self.children, start=1):
                if child.poll():  # None while it runs, 0 once it finished well
                    self.first_failure = (rank, child.returncode)
                    break
            else:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
        return self.first_failure

    def kill_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()

    def _last_resort(self, rank: int, code: int) -> None:
        """The launcher's own collective fails within the timeout, and it reports; were it
        stuck anywhere else, it would never end: end it here."""
        if not self.done.wait(self.timeout + LAST_RESORT_SECONDS):
            sys.stderr.write(f"error: training process {rank} stopped ({how_it_ended(code)})\n")
            os._exit(1)


class WatchedLauncher(_SubprocessScriptLauncher):
    """Lightning's launcher for processes on one machine, watched by `ChildWatch`."""

    def __init__(self, *args: Any, timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self.watch: ChildWatch | None = None

    def launch(
        self, function: Any, *args: Any, trainer: L.Trainer | None = None, **kwargs: Any
    ) -> Any:
        self.cluster_environment.validate_settings(self.num_processes, self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            self._call_children_scripts()
            self.watch = ChildWatch(self.procs, self.timeout)
            self.watch.start()
        _set_num_threads_if_needed(num_processes=self.num_processes)
        try:
            return function(*args, **kwargs)
        finally:
            if self.watch:
                self.watch.done.set()


class WatchedDDP(DDPStrategy):
    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        self._launcher = watched(self)


class WatchedFSDP(FSDPStrategy):
    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        self._launcher = watched(self)


def watched(strategy: DDPStrategy | FSDPStrategy) -> Any:
    """The strategy's launcher, replaced by a `WatchedLauncher` if it is Lightning's own."""
    launcher = strategy._launcher
    if type(launcher) is not _SubprocessScriptLauncher:
        return launcher
    timeout = strategy._timeout.total_seconds()
    args = (strategy.cluster_environment, strategy.num_processes, strategy.num_nodes)
    return WatchedLauncher(*args, timeout=timeout)


def training_strategy(settings: TrainSettings) -> str | Strategy:
    """Lightning's strategy for these settings: one process, or several whose collectives give
    up after `ddp_timeout` seconds (torch's default is 30 minutes)."""
    if settings.world_size == 1:
        return "auto"
    timeout = timedelta(seconds=settings.ddp_timeout)
    return (
        WatchedFSDP(timeout=timeout) if settings.strategy == "fsdp" else WatchedDDP(timeout=timeout)
    )


def how_it_ended(code: int) -> str:
    if code < 0:
        return f"killed by signal {-code}, {signal.Signals(-code).name}"
    return f"exit code {code}"


def stopped_run(
    trainer: L.Trainer, error: BaseException, workdir: Path, last: Path
) -> TrainingStopped | None:
    """`error` as one line if it came from another training process stopping (None if not);
    `last` is the checkpoint to resume from, in the output folder `workdir`."""
    if trainer.world_size == 1 or not is_lost_contact(error):
        return None  # an error of this process's own
    launcher = trainer.strategy.launcher
    watch = getattr(launcher, "watch", None)
    failed = watch.failure(wait=2) if watch else None  # the dead child may not be reaped yet
    if failed:
        watch.kill_children()
        rank, code = failed
        rank += trainer.node_rank * launcher.num_processes
        what = f"training process {rank} of {trainer.world_size} stopped ({how_it_ended(code)})"
    else:  # started by torchrun or srun, or the process that died is on another machine
        what = f"this training process lost contact with the others ({short_reason(error)})"
    return TrainingStopped(f"{what}, so the run was stopped; {resume_hint(workdir, last)}")


def is_lost_contact(error: BaseException) -> bool:
    """An error of a collective: NCCL's are `DistError`s, gloo's plain RuntimeErrors naming
    a gloo source file ('…/gloo/transport/tcp/pair.cc:545] Read error … Connection reset')."""
    return isinstance(error, torch.distributed.DistError) or "gloo" in str(error)


def short_reason(error: BaseException) -> str:
    """'Read error [127.0.0.1]:11680: Connection reset by peer' from gloo's
    '[…/pair.cc:545] Read error [127.0.0.1]:11680: Connection reset by peer. This is …'."""
    last_line = str(error).strip().splitlines()[-1].strip()
    return re.sub(r"^\[[^\]]*\]\s*", "", last_line).split(". ")[0]


def resume_hint(workdir: Path, last: Path) -> str:
    """How to go on from the output folder `workdir`, given its last checkpoint `last`."""
    if not last.is_file():
        return (
            f"no checkpoint was written yet: rerun with --overwrite --out {workdir} to start again"
        )
    # mmap: only the few bytes of the epoch number are read, not the weights
    done = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["epoch"] + 1
    epochs = f"{done} epoch{'s' if done > 1 else ''} done"
    return f"rerun with --resume --out {workdir} to continue from its last checkpoint ({epochs})"
