"""`polymodal serve` itself, as a user starts it: a real process with two workers on a free
loopback port, the API key from the command line, and Prometheus metrics shared by the workers
(multiprocess mode). The other serving tests call `create_app` in-process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from typer.testing import CliRunner

from polymodal.cli import app
from polymodal.data.table import Table
from polymodal.model import Model
from tests.serving.conftest import free_port
from tests.serving.test_api import INPUTS, json_row

KEY = {"X-API-Key": "s3cret"}
HEALTH = 'polymodal_requests_total{method="GET",route="/health",status="200"}'


def health_count(exposition: str) -> float:
    """The number of answered GET /health requests in a Prometheus exposition (0 if none)."""
    for line in exposition.splitlines():
        if line.startswith(HEALTH):
            return float(line.split()[-1])
    return 0.0


def per_worker_health_counts(folder: Path, scratch: Path) -> dict[str, float]:
    """Each worker's own count, read from its files in the multiprocess folder."""
    counts = {}
    for path in folder.glob("counter_*.db"):
        pid = path.stem.removeprefix("counter_")
        alone = scratch / pid
        alone.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        counts[pid] = health_count(generate_latest(registry).decode())
    return counts


def fresh_health_request(url: str) -> int:
    """GET /health on a new connection, so the kernel can hand it to either worker."""
    with httpx.Client(base_url=url, timeout=30) as client:
        return client.get("/health", headers={"Connection": "close"}).status_code


def stop(process: subprocess.Popen) -> None:
    """Ctrl-C for the server this test started (uvicorn then stops its workers)."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own process group (start_new_session)
            process.wait(timeout=30)


def test_serve_command_with_two_workers_shares_its_metrics(trained, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TMPDIR": str(tmp_path), "POLYMODAL_API_KEY": ""}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # `serve` makes its own, under TMPDIR
    command = [str(Path(sys.executable).parent / "polymodal"), "serve", str(trained.model_dir)]
    command += ["--port", str(port), "--workers", "2", "--api-key", "s3cret"]
    command += ["--log-level", "warning"]
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        answered = 0  # GET /health requests that got an answer
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not start within 120 s"
            try:
                assert fresh_health_request(url) == 200
                answered += 1
                break
            except httpx.TransportError:
                time.sleep(0.25)

        with httpx.Client(base_url=url, timeout=60) as client:
            frame = pd.read_csv(trained.data)
            row = json_row(trained, frame.iloc[5])
            assert client.post("/v1/predict", json=row).status_code == 401
            assert client.get("/metrics").status_code == 401
            response = client.post("/v1/predict", json=row, headers=KEY)
            assert response.status_code == 200, response.text
            table = Table(frame.iloc[[5]][INPUTS].reset_index(drop=True), trained.folder)
            reference = Model.load(trained.model_dir).predict(table)
            label = response.json()["predictions"][0]["label"]
            assert label["predicted"] == reference.loc[0, "label_predicted"]

        # Both workers must answer some of the requests for the shared count to mean anything.
        folders = list(tmp_path.glob("polymodal-metrics-*"))
        assert len(folders) == 1, "serve --workers keeps its metrics in a multiprocess folder"
        with ThreadPoolExecutor(8) as pool:
            for _ in range(10):
                answered += sum(s == 200 for s in pool.map(fresh_health_request, [url] * 24))
                workers = per_worker_health_counts(folders[0], tmp_path / "one-worker")
                if sum(count > 0 for count in workers.values()) >= 2:
                    break
        assert sum(count > 0 for count in workers.values()) == 2, workers

        # Any worker's /metrics counts every worker's requests (a request is counted just
        # after its answer is sent, so the last few may take a moment to appear).
        deadline = time.monotonic() + 10
        seen = []
        while len(seen) < 6 and time.monotonic() < deadline:
            with httpx.Client(base_url=url, timeout=30) as client:
                metrics = client.get("/metrics", headers={**KEY, "Connection": "close"}).text
            if health_count(metrics) == answered:
                seen.append(answered)
            else:
                seen.clear()
                time.sleep(0.1)
        assert len(seen) == 6, (health_count(metrics), answered, workers)
    finally:
        stop(process)
        log.close()
    assert process.returncode is not None


def test_serve_command_refuses_a_folder_without_a_model(tmp_path):
    result = CliRunner().invoke(app, ["serve", str(tmp_path), "--port", str(free_port())])
    assert result.exit_code == 2 and "is not a polymodal model folder" in result.output
    assert "Traceback" not in result.output
