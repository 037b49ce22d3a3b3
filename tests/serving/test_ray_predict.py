"""`polymodal predict --engine ray` on a real Ray cluster on 127.0.0.1: the same bytes as one
process, a killed actor changes nothing, and --resume continues per shard."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
from typer.testing import CliRunner

from polymodal.cli import app
from polymodal.serving.ray_batch import cpus_per_worker
from tests.media import shapes_and_tones
from tests.ray_cluster import local_ray_cluster
from tests.serving.conftest import data_lines

CLI = "from polymodal.cli import app; app(prog_name='polymodal')"
runner = CliRunner()


@pytest.fixture(scope="module")
def cluster():
    with local_ray_cluster() as address:
        yield address


def predict(*args: object):
    return runner.invoke(app, ["predict", *map(str, args)])


def title(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # gone
        return ""


def shard_actors() -> list[psutil.Process]:
    """The Ray actors holding the model: their process titles name ShardPredictor."""
    return [process for process in psutil.process_iter() if "ShardPredictor" in title(process)]


def test_ray_output_is_byte_identical(trained, cluster, tmp_path):
    frame = pd.read_csv(trained.data)
    frame.loc[9, "picture"] = "img/missing.png"  # reported with its row, as without Ray
    data = trained.folder / "ray-with-problem.csv"
    frame.to_csv(data, index=False)
    local, distributed = tmp_path / "local.csv", tmp_path / "ray.csv"
    with torch_threads(2):  # two actors of one CPU each still run two threads, as this one
        began = time.monotonic()
        alone = predict(trained.model_dir, data, "-o", local, "--chunk-size", "5")
        middle = time.monotonic()
        result = predict(
            trained.model_dir, data, "-o", distributed, "--chunk-size", "5",
            "--engine", "ray", "--address", cluster, "--workers", "2",
        )  # fmt: skip
    print(f"one process {middle - began:.1f} s, Ray {time.monotonic() - middle:.1f} s")
    assert alone.exit_code == 0 and result.exit_code == 0, result.output
    assert "32 predictions written" in result.output
    assert distributed.read_bytes() == local.read_bytes()
    said = " ".join(result.output.split())
    assert "1 input problems" in said and "file not found" in said and " 9 " in said


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_embed_on_ray_writes_the_same_parquet(trained, cluster, tmp_path):
    local, distributed = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    args = ["embed", trained.model_dir, trained.data, "--column", "picture", "-o"]
    assert runner.invoke(app, [*map(str, args), str(local)]).exit_code == 0
    result = runner.invoke(
        app, [*map(str, args), str(distributed), "--engine", "ray", "--address", cluster]
    )
    assert result.exit_code == 0, result.output
    assert "32 vectors written" in result.output
    assert distributed.read_bytes() == local.read_bytes()


def test_killed_actor_is_replaced_and_no_row_is_lost(trained, cluster, tmp_path):
    data = shapes_and_tones(tmp_path / "data", rows=48, seed=1)
    reference, output = tmp_path / "reference.csv", tmp_path / "ray.csv"
    args = [str(trained.model_dir), str(data), "--chunk-size", "1"]
    assert predict(*args, "-o", reference).exit_code == 0

    command = [sys.executable, "-c", CLI, "predict", *args, "-o", str(output)]
    command += ["--engine", "ray", "--address", cluster, "--workers", "2"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        victim = predicting_actor(run, output)
        victim.send_signal(signal.SIGKILL)  # mid-shard, as an out-of-memory kill would
        killed_at = data_lines(output)
        said, _ = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, said
    assert killed_at < 48, "the run finished before the kill"
    assert output.read_bytes() == reference.read_bytes()
    print(f"actor killed after {killed_at} of 48 rows were written")


def predicting_actor(run: subprocess.Popen, output: Path) -> psutil.Process:
    """An actor of the run caught predicting a shard (Ray titles its process
    `ray::MapWorker(MapBatches(ShardPredictor)).submit` meanwhile)."""
    deadline = time.monotonic() + 300  # the actors start slowly on a busy machine
    while data_lines(output) < 2 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the actors are up and predicting
    actors = shard_actors()
    while run.poll() is None and time.monotonic() < deadline:
        for actor in actors:
            if ".submit" in title(actor):
                return actor
    raise AssertionError(f"no actor seen predicting; {data_lines(output)} rows written")


def test_resume_continues_after_the_last_whole_shard(trained, cluster, tmp_path):
    reference, output = tmp_path / "reference.csv", tmp_path / "ray.csv"
    args = [trained.model_dir, trained.data, "--chunk-size", "4"]
    assert predict(*args, "-o", reference).exit_code == 0
    whole = reference.read_bytes()
    lines = whole.splitlines(keepends=True)
    output.write_bytes(b"".join(lines[:13]) + lines[13][:7])  # 12 rows, then a cut line

    result = predict(*args, "-o", output, "--resume", "--engine", "ray", "--address", cluster)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "20 predictions written" in said and "(12 already there)" in said
    assert output.read_bytes() == whole

    again = predict(*args, "-o", output, "--resume", "--engine", "ray", "--address", cluster)
    assert again.exit_code == 0 and "0 predictions written" in " ".join(again.output.split())
    assert output.read_bytes() == whole


def test_engine_options_are_checked_before_any_cluster(trained, tmp_path):
    output = tmp_path / "preds.csv"
    result = predict(trained.model_dir, trained.data, "-o", output, "--workers", "2")
    assert result.exit_code == 2 and "--engine ray" in result.output
    result = predict(
        trained.model_dir, trained.data, "-o", output, "--engine", "ray",
        "--zero-shot", "picture", "--labels", "a,b",
    )  # fmt: skip
    assert result.exit_code == 2 and "--zero-shot" in result.output
    assert not output.exists()


def test_actors_split_the_smallest_node():
    assert cpus_per_worker([2], 2) == 1
    assert cpus_per_worker([16, 8], 2) == 8  # one actor per node, each fits on 8 cores
    assert cpus_per_worker([16, 8], 3) == 4  # two on some node
    assert cpus_per_worker([2], 8) == 1


def test_without_ray_the_error_names_the_extra(trained, tmp_path, monkeypatch):
    real = importlib.util.find_spec

    def without_ray(name, *args):
        return None if name.split(".")[0] == "ray" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_ray)
    result = predict(trained.model_dir, trained.data, "-o", tmp_path / "p.csv", "--engine", "ray")
    assert result.exit_code == 2 and "pip install 'polymodal[scale]'" in result.output


def test_the_cli_imports_without_ray():
    check = "import sys, polymodal.cli, polymodal.serving.ray_batch; print('ray' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert found.stdout.strip() == "False", found.stderr  # ray is imported only by a Ray run
