"""`polymodal train --engine ray`: Ray Train workers on a real Ray cluster on 127.0.0.1, each
training on its share of the rows, one writing the model."""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from polymodal.cli import app
from polymodal.config import TrainSettings
from polymodal.model import Model
from polymodal.training.distributed import Launcher, process_count, process_rank, started_by
from tests.ray_cluster import local_ray_cluster
from tests.training.test_distributed import demo_table, tiny_config

runner = CliRunner()


@pytest.fixture(scope="module")
def cluster():
    with local_ray_cluster(cpus=2) as address:
        yield address


def train(*args: object):
    return runner.invoke(app, ["train", *map(str, args)])


def test_two_ray_train_workers_each_train_on_half_the_rows_and_one_writes(cluster, tmp_path):
    data, config = demo_table(tmp_path), tiny_config(tmp_path)
    out = tmp_path / "runs" / "m"
    result = train(
        data, "--target", "label", "--config", config, "--out", out, "--no-report",
        "--engine", "ray", "--address", cluster, "--devices", "2",
    )  # fmt: skip
    said = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    # ranks as Ray Train gave them, gathered from the workers: only rank 0 wrote the model
    assert "trained by 2 Ray Train workers on 1 node(s); worker 0 wrote the model" in said
    assert said.count("model saved to") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    half = metrics["rows"]["train"] // 2
    assert len(metrics["history"]) == 2
    assert all(epoch["train_rows"] == [half, half] for epoch in metrics["history"])
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.safetensors",
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]  # no second output folder
    model = Model.load(out)
    assert model.config.train.devices == 2  # the saved config says how many trained
    predictions = model.predict(data)
    assert len(predictions) == len(pd.read_csv(data))


def test_a_workers_bad_input_stops_the_run_with_its_one_line(cluster, tmp_path):
    data, config = demo_table(tmp_path), tiny_config(tmp_path)
    result = train(
        data, "--target", "no_such_column", "--config", config, "--out", tmp_path / "m",
        "--no-report", "--engine", "ray", "--address", cluster, "--devices", "2",
    )  # fmt: skip
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no_such_column" in lines[0]


def test_the_rank_and_count_come_from_the_launcher_that_started_the_process(monkeypatch):
    monkeypatch.setenv("RANK", "0")  # a launcher that knows the ranks wins over the variables
    settings = TrainSettings(devices=2)
    ray_like = Launcher(rank=lambda: 2, world_size=lambda: 3, trainer_options=lambda _: {})
    with started_by(ray_like):
        assert (process_rank(settings), process_count(settings)) == (2, 3)
    assert (process_rank(settings), process_count(settings)) == (0, 2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--engine", "ray", "--num-nodes", "2"], "give their total with --devices"),
        (["--engine", "ray", "--strategy", "fsdp"], "--engine ray trains with DDP"),
        (["--address", "127.0.0.1:6379"], "--address is for --engine ray"),
    ],
)
def test_engine_options_are_checked_before_any_cluster(tmp_path, options, message):
    data, out = demo_table(tmp_path), tmp_path / "m"
    result = train(data, "--target", "label", "--out", out, *options)
    assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert not out.exists()


def test_without_ray_train_the_error_names_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec

    def without_ray(name, *args):
        return None if name.split(".")[0] == "ray" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_ray)
    data, out = demo_table(tmp_path), tmp_path / "m"
    result = train(data, "--target", "label", "--out", out, "--engine", "ray")
    assert result.exit_code == 2 and "pip install 'polymodal[scale]'" in result.output
    assert not out.exists()
