"""`polymodal train ... --engine ray --devices N`: training on a Ray cluster with Ray Train.

The driver (the `polymodal` process, or `fit_on_ray`) checks the options and the output folder,
then runs Ray Train's `TorchTrainer` with N workers (`ScalingConfig(num_workers=N)`, one GPU
each where the cluster has GPUs, else the smallest node's CPUs shared among the workers it
would hold). Ray places the workers on the cluster's machines, creates the torch process group
between them (gloo on CPUs, NCCL on GPUs; collectives give up after `train.ddp_timeout`
seconds, as in a `--devices` run) and sets RANK, WORLD_SIZE, LOCAL_RANK, NODE_RANK,
MASTER_ADDR and MASTER_PORT in each. Every worker runs `train_worker`, which is `Model.fit`:
the same path as one process of a `--devices N` run. Each worker prepares the data itself,
trains on its own share of the training rows (`rows_of_process`, with the rank and the world
size of Ray Train's context: `distributed.Launcher`), validates on all of them (so all agree
on the score and the stop), and only rank 0 writes the model folder. The driver reads that
folder back to print the metrics and write the report: the folder, the table and its files
must be at the same paths on every machine (shared storage).

Inside a worker, Lightning runs Ray's `RayDDPStrategy` with `RayLightningEnvironment` (the
Trainer passed through `prepare_trainer`, which checks that pairing), not a plain Lightning DDP
over the process group Ray created. Lightning's own environments do not see Ray's ranks
correctly: TorchElastic's (which reads RANK and WORLD_SIZE) also wants GROUP_RANK, which Ray
does not set, so Lightning falls back to its default environment, which takes the world size
from the Trainer's `devices` x `num_nodes` and the rank from NODE_RANK x devices + LOCAL_RANK.
That is right only when every node holds the same number of workers, and Ray promises no such
placement (it puts workers wherever resources are free). `RayLightningEnvironment` reads the
world size and every rank from Ray Train's context, and `RayDDPStrategy` puts the model on
`ray.train.torch.get_device()`, the device Ray assigned to the worker. The process group is
Ray's (Lightning finds it initialised and uses it), which is why its timeout is set through
`TorchConfig(timeout_s=...)`.

Ray is an optional dependency (the `scale` extra) and is imported only here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from polymodal.config import Config, ConfigError, TrainSettings
from polymodal.data.problems import BadInputError
from polymodal.model import LAST_CHECKPOINT, Model, check_output_folder
from polymodal.training.distributed import Launcher, TrainingStopped, process_rank, started_by

INSTALL = "pip install 'polymodal[scale]'"
ONE_LINE_ERRORS = (BadInputError, ConfigError, TrainingStopped, FileExistsError)


@dataclass
class RayRun:
    """A finished Ray Train run: the model rank 0 wrote (loaded from its folder) and, for each
    worker by rank, where it ran and whether it wrote the model."""

    model: Model
    workers: list[dict[str, Any]] = field(default_factory=list)


def fit_on_ray(
    config: Config,
    data: str | Path,
    out: str | Path,
    *,
    valid: str | Path | None = None,
    address: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> RayRun:
    """`Model(config=config).fit(data, valid, out=out)` on `workers` Ray Train workers
    (default: `config.train.devices`) of the cluster at `address` (None: one started here).

    >>> run = fit_on_ray(load_config("tiny.yaml"), "data.csv", "runs/m", workers=2)
    >>> run.model.predict("new.csv")
    """
    config = ray_config(config, workers)
    count = config.train.devices
    if not config.targets and not Path(data).is_dir():
        raise BadInputError("no target: pass target='column' (CLI: --target COLUMN)")
    out = Path(out).resolve()
    if resume and not (out / LAST_CHECKPOINT).is_file():
        raise BadInputError(f"--resume: no checkpoint at {out}/{LAST_CHECKPOINT}")
    check_output_folder(out, overwrite=overwrite, resume=resume)  # before any worker starts
    ray, train, torch_train = import_ray_train()
    job = {
        "config": config,
        "data": str(Path(data).resolve()),
        "valid": str(Path(valid).resolve()) if valid is not None else None,
        "out": str(out),
        "overwrite": overwrite,
        "resume": resume,
        "cwd": os.getcwd(),  # relative paths in the config (encoder folders) resolve here
    }
    storage = Path(tempfile.mkdtemp(prefix="polymodal-ray-train-"))  # Ray Train's run state
    joined = not ray.is_initialized()  # a caller's own `ray.init` is left to it
    if joined:
        options: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
        if address is None:
            options["include_dashboard"] = False
        ray.init(address=address, **options)
    try:
        logging.getLogger("ray.train").setLevel(logging.ERROR)
        trainer = torch_train.TorchTrainer(
            train_worker,
            train_loop_config=job,
            scaling_config=scaling(ray, train, count),
            torch_config=torch_train.TorchConfig(timeout_s=int(config.train.ddp_timeout)),
            run_config=train.RunConfig(
                name="polymodal",
                storage_path=str(storage),
                # the driver's polymodal settings (the feature cache, decoding processes)
                worker_runtime_env={"env_vars": polymodal_variables()},
            ),
        )
        try:
            result = trainer.fit()
        except train.TrainingFailedError as error:
            raise worker_error(error, count, out) from None
    finally:
        if joined:
            ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    return RayRun(Model.load(out), list(result.return_value or []))


def ray_config(config: Config, workers: int | None) -> Config:
    """A copy of `config` for `workers` Ray Train workers: `devices` is their count (so the
    saved config says how many processes trained), one 'node' (Ray places them), DDP."""
    settings = config.train
    if settings.num_nodes != 1:
        raise ConfigError(
            "--engine ray places the workers on the cluster's machines itself: give their "
            "total with --devices, not --num-nodes"
        )
    if settings.strategy == "fsdp":
        raise ConfigError("--engine ray trains with DDP (Ray's RayDDPStrategy), not fsdp")
    config = config.model_copy(deep=True)
    if workers is not None:
        config.train.devices = workers
    return config


def import_ray_train() -> tuple[Any, Any, Any]:
    """`ray`, `ray.train` and `ray.train.torch`, or a one-line error naming the extra."""
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.train") is None:
        raise BadInputError(f"--engine ray needs Ray Train: {INSTALL}")
    try:
        import ray
        import ray.train
        import ray.train.lightning  # noqa: F401  (the workers need it: fail here, not there)
        import ray.train.torch
    except ImportError as error:  # ray without the train extra's packages
        raise BadInputError(f"--engine ray needs Ray Train ({error}): {INSTALL}") from None
    return ray, ray.train, ray.train.torch


def scaling(ray: Any, train: Any, count: int) -> Any:
    """One GPU per worker where the cluster has GPUs (NCCL), else CPUs (gloo): the smallest
    node's cores shared by the workers it would hold, as `predict --engine ray` shares them."""
    from polymodal.serving.ray_batch import cpus_per_worker, node_cpus

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if 0 < gpus < count:
        raise ConfigError(
            f"--devices {count}: one GPU per Ray Train worker, and the cluster has {gpus}"
        )
    resources: dict[str, float] = {"CPU": cpus_per_worker(node_cpus(ray), count)}
    if gpus:
        resources["GPU"] = 1
    return train.ScalingConfig(
        num_workers=count, use_gpu=bool(gpus), resources_per_worker=resources
    )


def polymodal_variables() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name.startswith("POLYMODAL_")}


def worker_error(error: Exception, count: int, out: Path) -> Exception:
    """A worker's own one-line error (bad input, a lost peer) as it was raised there; a worker
    that died as one `TrainingStopped` line with the resume hint; anything else unchanged
    (Ray's message holds the worker's traceback)."""
    from polymodal.training.processes import resume_hint

    failures = getattr(error, "worker_failures", None) or {}
    for rank in sorted(failures):
        if isinstance(failures[rank], ONE_LINE_ERRORS):
            return failures[rank]
    for rank in sorted(failures):
        failure = failures[rank]
        if type(failure).__name__ in ("ActorDiedError", "RayActorError", "ActorUnavailableError"):
            reason = str(failure).strip().splitlines()[0] if str(failure).strip() else "it died"
            return TrainingStopped(
                f"Ray Train worker {rank} of {count} stopped ({reason}), so the run was "
                f"stopped; {resume_hint(out, out / LAST_CHECKPOINT)}"
            )
    return error


# ------------------------------------------------------------------------ in each worker
def train_worker(job: dict[str, Any]) -> list[dict[str, Any]]:
    """One Ray Train worker: `Model.fit` as one process of a DDP run, its ranks Ray's.
    Returns (on every rank; Ray keeps rank 0's) each worker's rank, node and whether it
    wrote the model, gathered over a gloo group beside the one Ray made for training."""
    import ray
    import torch
    import torch.distributed as dist

    if Path(job["cwd"]).is_dir():  # Ray starts workers in a folder of its own
        os.chdir(job["cwd"])
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus and not torch.cuda.is_available():
        torch.set_num_threads(max(1, int(cpus)))  # the cores Ray reserved for this worker
    # For the summary after `fit`, where the others wait while rank 0 scores and saves the
    # model, however long that takes: were a worker to fail, Ray would stop them all.
    summary = (
        dist.new_group(backend="gloo", timeout=timedelta(days=1)) if dist.is_initialized() else None
    )
    with started_by(ray_launcher()):
        model = Model(config=job["config"])
        model.fit(
            job["data"],
            valid=job["valid"],
            out=job["out"],
            overwrite=job["overwrite"],
            resume=job["resume"],
        )
        me = {
            "rank": process_rank(model.config.train),
            "node": ray.util.get_node_ip_address(),
            "wrote": bool(model.metrics_),  # only the writer scores and saves the model
        }
    if summary is None:
        return [me]
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, me, group=summary)
    return everyone


def ray_launcher() -> Launcher:
    """Ray Train's ranks, and the Trainer options that follow Ray's placement (see above)."""
    import ray.train
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    def trainer_options(_settings: TrainSettings) -> dict[str, Any]:
        return {
            "devices": "auto",  # Ray's: each worker uses the device Ray gave it
            "num_nodes": 1,  # not used for ranks: RayLightningEnvironment gives them
            "strategy": RayDDPStrategy(),  # its timeout is TorchConfig's (Ray made the group)
            "plugins": [RayLightningEnvironment()],
        }

    context = ray.train.get_context
    return Launcher(
        rank=lambda: context().get_world_rank(),
        world_size=lambda: context().get_world_size(),
        trainer_options=trainer_options,
        prepare=prepare_trainer,
    )
