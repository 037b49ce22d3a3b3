"""Several training processes (Lightning's DDP on CPU, gloo): shares of rows, ranks, one writer."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from polymodal.config import TrainSettings
from polymodal.demo import make_demo_data
from polymodal.training.distributed import process_rank, rows_of_process

TINY = {
    "model": {"dim": 32, "layers": 1, "heads": 2},
    "train": {"max_epochs": 2, "batch_size": 16},
    "preprocess": {"audio": {"n_mels": 32}},
}


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
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert process_rank(settings) == 0
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert process_rank(settings) == 1
    monkeypatch.setenv("NODE_RANK", "1")
    assert process_rank(settings) == 3  # node 1's second process
    monkeypatch.setenv("RANK", "2")  # torchrun's global rank wins
    assert process_rank(settings) == 2


@pytest.mark.parametrize(
    "target",
    [["--target", "label"], ["--match", "image=sound", "--positive-by", "label"]],
    ids=["classes", "match (its loss gathers across processes)"],
)
def test_two_processes_each_train_on_half_the_rows_and_one_writes(tmp_path, target):
    data = make_demo_data(tmp_path / "demo", rows=96)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "runs" / "m"
    command = [
        sys.executable, "-m", "polymodal.cli", "train", str(data), *target,
        "--config", str(config), "--devices", "2", "--strategy", "ddp", "--out", str(out),
        "--no-report",
    ]  # fmt: skip
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


def test_two_torchrun_nodes_train_one_model(tmp_path):
    """`--num-nodes 2` started as two torchrun nodes (ranks 0 and 1, MASTER_ADDR 127.0.0.1),
    as two machines would run it."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = make_demo_data(tmp_path / "demo", rows=96)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "runs" / "m"
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
                "-m",
                "polymodal.cli",
                "train",
                str(data),
                "--target",
                "label",
                "--config",
                str(config),
                "--num-nodes",
                "2",
                "--strategy",
                "ddp",
                "--out",
                str(out),
                "--no-report",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
        )  # fmt: skip
        for rank in range(2)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(outputs)
    assert "model saved to" in outputs[0] and "model saved to" not in outputs[1]
    metrics = json.loads((out / "metrics.json").read_text())
    half = metrics["rows"]["train"] // 2
    assert all(epoch["train_rows"] == [half, half] for epoch in metrics["history"])
