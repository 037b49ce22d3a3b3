"""Several training processes (Lightning's DDP on CPU, gloo): shares of rows, ranks, one writer."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from polymodal.config import TrainSettings
from polymodal.demo import make_demo_data
from polymodal.model import Model
from polymodal.training.distributed import process_rank, rows_of_process
from polymodal.training.processes import how_it_ended, is_lost_contact, short_reason

TINY = {
    "model": {"dim": 32, "layers": 1, "heads": 2},
    "train": {"max_epochs": 2, "batch_size": 16},
    "preprocess": {"audio": {"n_mels": 32}},
}


def demo_table(tmp_path):
    return make_demo_data(tmp_path / "demo", rows=96)


def tiny_config(tmp_path, **train):
    """TINY as a YAML file, with these training settings on top."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], **train}}))
    return config


def train_command(data, config, out, *options):
    """`polymodal train` of the demo table, DDP, without a report; `options` add to it (the
    target: `--target label` unless given)."""
    target = [] if {"--target", "--match"} & set(options) else ["--target", "label"]
    return [
        sys.executable, "-m", "polymodal.cli", "train", str(data), *target, "--config",
        str(config), "--strategy", "ddp", "--out", str(out), "--no-report", *options,
    ]  # fmt: skip


@pytest.mark.parametrize(("rows", "world"), [(10, 2), (11, 2), (100, 3), (7, 1), (5, 4)])
def test_each_process_gets_an_equal_disjoint_share(rows, world):
    all_rows = np.arange(100, 100 + rows)
    shares = [rows_of_process(all_rows, rank, world) for rank in range(world)]
    assert len({len(share) for share in shares}) == 1  # the same number of steps everywhere
    together = np.concatenate(shares)
    assert len(np.unique(together)) == len(together)  # no row in two shares
    assert set(together) <= set(all_rows)
    assert len(all_rows) - len(together) < world


def test_the_rank_comes_from_the_launchers_variables(monkeypatch):
    settings = TrainSettings(devices=2, num_nodes=2)
    for name in (
        "RANK",
        "LOCAL_RANK",
        "NODE_RANK",
        "SLURM_NTASKS",
        "SLURM_PROCID",
        "SLURM_JOB_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    assert process_rank(settings) == 0
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert process_rank(settings) == 1
    monkeypatch.setenv("NODE_RANK", "1")
    assert process_rank(settings) == 3  # node 1's second process
    monkeypatch.setenv("RANK", "2")  # torchrun's global rank wins
    assert process_rank(settings) == 2
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "1")  # srun's, above all (as in Lightning)
    assert process_rank(settings) == 1
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # a shell in an allocation: not srun's
    assert process_rank(settings) == 2


def test_a_stopped_process_is_described_in_words():
    assert how_it_ended(-9) == "killed by signal 9, SIGKILL"
    assert how_it_ended(1) == "exit code 1"
    gloo = RuntimeError(
        "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
        "[127.0.0.1]:11680: Connection reset by peer. This is typically caused by a remote worker"
    )
    assert is_lost_contact(gloo) and not is_lost_contact(ValueError("bad cell"))
    assert short_reason(gloo) == "Read error [127.0.0.1]:11680: Connection reset by peer"


@pytest.mark.parametrize(
    "target",
    [["--target", "label"], ["--match", "image=sound", "--positive-by", "label"]],
    ids=["classes", "match (its loss gathers across processes)"],
)
def test_two_processes_each_train_on_half_the_rows_and_one_writes(tmp_path, target):
    data, config = demo_table(tmp_path), tiny_config(tmp_path)
    out = tmp_path / "runs" / "m"
    command = train_command(data, config, out, *target, "--devices", "2")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert text.count("model saved to") == 1  # only rank 0 reports
    metrics = json.loads((out / "metrics.json").read_text())
    train_rows = metrics["rows"]["train"]
    assert len(metrics["history"]) == 2
    for epoch in metrics["history"]:
        assert epoch["train_rows"] == [train_rows // 2, train_rows // 2]
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.safetensors",
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]  # no second output folder


def assert_rank_0_wrote_and_each_trained_half(processes: list, out) -> None:
    """Two training processes started side by side (ranks 0 and 1) finished well, only rank 0
    saved the model, and every epoch each trained on half the rows."""
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], "\n".join(outputs)
    assert "model saved to" in outputs[0] and "model saved to" not in outputs[1]
    metrics = json.loads((out / "metrics.json").read_text())
    half = metrics["rows"]["train"] // 2
    assert all(epoch["train_rows"] == [half, half] for epoch in metrics["history"])


def test_two_torchrun_nodes_train_one_model(tmp_path):
    """`--num-nodes 2` started as two torchrun nodes (ranks 0 and 1, MASTER_ADDR 127.0.0.1),
    as two machines would run it."""
    port = free_port()
    data, config = demo_table(tmp_path), tiny_config(tmp_path)
    out = tmp_path / "runs" / "m"
    command = train_command(data, config, out, "--num-nodes", "2")
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--node_rank",
                str(rank),
                "--nproc_per_node",
                "1",
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                str(port),
                *command[1:],
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
        )  # fmt: skip
        for rank in range(2)
    ]
    assert_rank_0_wrote_and_each_trained_half(nodes, out)


def test_two_slurm_tasks_train_one_model(tmp_path):
    """Two processes with the variables `srun --ntasks-per-node=2` sets (what Lightning's
    SLURMEnvironment reads), started here without SLURM: each trains on half the rows and
    only rank 0 writes. Lightning needs no `srun` on PATH for this."""
    data, config = demo_table(tmp_path), tiny_config(tmp_path)
    out = tmp_path / "runs" / "m"
    command = train_command(data, config, out, "--devices", "2")
    slurm = {
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "polymodal-test", "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost", "MASTER_PORT": str(free_port()),
    }  # fmt: skip
    others = ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR")
    base = {key: value for key, value in os.environ.items() if key not in others}
    tasks = [
        subprocess.Popen(
            command,
            env={**base, **slurm, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
        )
        for rank in range(2)
    ]
    assert_rank_0_wrote_and_each_trained_half(tasks, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="FSDP runs where there are GPUs")
def test_fsdp_without_gpus_fails_at_once_in_one_line(tmp_path):
    """Lightning and torch (2.14) run FSDP on GPUs only: the run stops before preparing data."""
    data, config = demo_table(tmp_path), tiny_config(tmp_path)
    command = train_command(data, config, tmp_path / "m", "--devices", "2")
    command[command.index("ddp")] = "fsdp"
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --strategy fsdp needs GPUs (torch's FSDP does not run on CPUs) and this machine "
        "has none; use --strategy ddp"
    )
    assert not (tmp_path / "m").exists()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_with_local_rank(pid, local_rank):
    """The child process of `pid` whose environment holds LOCAL_RANK=`local_rank` (Linux)."""
    wanted = f"LOCAL_RANK={local_rank}".encode()
    for proc in Path("/proc").iterdir():
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid and wanted in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except (ValueError, OSError):  # not a process, or one that has just ended
            continue
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds rank 1 through /proc")
def test_killing_one_process_stops_the_run_and_resume_continues(tmp_path):
    """SIGKILL rank 1 of `--devices 2` after the first checkpoint: the run stops within
    seconds with one line naming the process (no traceback), the checkpoint survives, and
    `--resume` continues after the checkpointed epoch and writes the model."""
    data = demo_table(tmp_path)
    config = tiny_config(tmp_path, max_epochs=30, patience=30, ddp_timeout=45)
    out = tmp_path / "m"
    command = train_command(data, config, out, "--devices", "2")
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        checkpoint = out / ".checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 120
        while not checkpoint.is_file() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        rank_1 = child_with_local_rank(run.pid, 1)
        assert checkpoint.is_file() and rank_1, run.communicate(timeout=60)
        os.kill(rank_1, signal.SIGKILL)
        killed = time.monotonic()
        _, errors = run.communicate(timeout=60)
    finally:
        run.kill()  # nothing left behind if an assertion failed (rank 1 dies with it or alone)
    assert time.monotonic() - killed < 60
    assert run.returncode == 1, errors
    done = torch.load(checkpoint, weights_only=True, mmap=True)["epoch"]  # 0-based, finished
    lines = [line for line in errors.splitlines() if line.strip()]
    assert lines[-1].startswith("error: training process 1 of 2 stopped (killed by signal 9"), (
        errors
    )
    assert (
        f"--resume --out {out} to continue from its last checkpoint ({done + 1} epoch" in lines[-1]
    )
    assert "Traceback" not in errors and "gloo" not in errors

    last_epoch = done + 3
    resumed = subprocess.run(
        [*command, "--resume", "--epochs", str(last_epoch + 1)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == list(range(done + 1, last_epoch + 1))
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.safetensors",
    ]
    Model.load(out).predict(data)


def test_a_process_started_by_rank_0_reads_its_prepared_folder_instead_of_decoding(
    tmp_path, monkeypatch
):
    """Lightning's launcher starts ranks 1.. from rank 0 after it has prepared the data; they
    find the folder in their environment and train from it without decoding a file."""
    import polymodal.model as model_module
    from tests.media import tiny_config as tiny

    data = demo_table(tmp_path)
    config = tiny()
    config.train.max_epochs = 1
    prepared = Model(target="label", config=config).prepare(data, tmp_path / "prepared")
    monkeypatch.setenv(model_module.RANK0_PREPARED, str(prepared))
    monkeypatch.setenv("RANK", "1")  # a non-writing process of the run

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr("polymodal.data.features.encode_inputs", refuse)
    monkeypatch.setattr("polymodal.training.datamodule.encode_inputs", refuse)
    model = Model(target="label", config=config).fit(data, out=tmp_path / "model")
    assert model.net_ is not None  # trained
    assert not (tmp_path / "model" / "config.json").exists()  # and left the saving to rank 0
    assert (prepared / "prepared.json").is_file()  # rank 0's folder is left to rank 0
