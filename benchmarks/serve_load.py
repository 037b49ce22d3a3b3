"""Load on `polymodal serve`: requests/s and latency at concurrency 1, 8 and 32, with and
without micro-batching, for an AV-MNIST model (image + audio), on 127.0.0.1 only.

    .venv/bin/python benchmarks/serve_load.py [--model DIR] [--epochs 1] [--requests 400]

Without --model it trains a small model first (--epochs 1 on --train-rows rows of the
train split of ../shared/datasets/avmnist/avmnist.csv). Each level sends at most --requests
requests and stops after --max-seconds, whichever comes first; the server is a subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from common import DATASETS, ROOT, machine, require

sys.path.insert(0, str(ROOT / "src"))

from polymodal.config import Config  # noqa: E402
from polymodal.data.table import read_table  # noqa: E402

HOST = "127.0.0.1"  # loopback only


def train_model(data: Path, out: Path, epochs: int, rows: int) -> Path:
    from polymodal.model import Model

    table = read_table(data)
    train = table.subset(np.flatnonzero(table.frame["split"] == "train")[:rows])
    config = Config(inputs=["image", "audio"])
    config.train.max_epochs = epochs
    Model(target="label", config=config).fit(train, out=out, overwrite=True)
    return out


def request_bodies(data: Path, count: int) -> list[tuple[bytes, str]]:
    """Multipart bodies for test rows, built once so the client spends little CPU per request."""
    table = read_table(data)
    rows = np.flatnonzero(table.frame["split"] == "test")[:count]
    bodies = []
    for row in rows:
        record = table.frame.iloc[row]
        files = {
            name: (Path(record[name]).name, (table.base_dir / record[name]).read_bytes())
            for name in ("image", "audio")
        }
        request = httpx.Request("POST", f"http://{HOST}/v1/predict", files=files)
        bodies.append((request.read(), request.headers["content-type"]))
    return bodies


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def start_server(model: Path, port: int, batching: bool, max_batch: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "polymodal.cli", "serve", str(model), "--host", HOST]
    command += ["--port", str(port), "--max-batch", str(max_batch), "--log-level", "warning"]
    command += [] if batching else ["--no-batching"]
    server = subprocess.Popen(command, env={**os.environ, "POLYMODAL_PROGRESS": "0"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.3)
    server.kill()
    sys.exit("the server did not start")


async def load(url: str, bodies: list, concurrency: int, requests: int, seconds: float) -> dict:
    """`concurrency` clients sending back to back until `requests` or `seconds` run out."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent, errors
        while sent < requests and time.monotonic() < stop_at:
            body, content_type = bodies[sent % len(bodies)]
            sent += 1
            started = time.perf_counter()
            try:
                response = await http.post(
                    url, content=body, headers={"content-type": content_type}
                )
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok

    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    times = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "rate": len(latencies) / elapsed,
        "p50": float(np.percentile(times, 50)),
        "p99": float(np.percentile(times, 99)),
    }


def batch_totals(port: int) -> tuple[float, float]:
    """(rows, forward passes) so far, from the server's /metrics."""
    text = httpx.get(f"http://{HOST}:{port}/metrics").text
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("polymodal_batch_rows_")
    }
    return values.get("polymodal_batch_rows_sum", 0), values.get("polymodal_batch_rows_count", 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None, help="model folder (else train one)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=400, help="at most, per level")
    parser.add_argument("--max-seconds", type=float, default=60, help="at most, per level")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--max-batch", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("POLYMODAL_PROGRESS", "0")
    data = require(DATASETS / "avmnist" / "avmnist.csv")
    model = args.model or train_model(
        data, ROOT / "runs" / "serve-load-avmnist", args.epochs, args.train_rows
    )
    bodies = request_bodies(data, 256)
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict[tuple[str, int], dict] = {}
    for mode, batching in (("batching", True), ("no batching", False)):
        port = free_port()
        server = start_server(model, port, batching, args.max_batch)
        url = f"http://{HOST}:{port}/v1/predict"
        try:
            asyncio.run(load(url, bodies, 4, 40, 30))  # warm-up
            for concurrency in levels:
                rows, passes = batch_totals(port)
                results[mode, concurrency] = asyncio.run(
                    load(url, bodies, concurrency, args.requests, args.max_seconds)
                )
                more_rows, more_passes = batch_totals(port)
                batch = (more_rows - rows) / max(more_passes - passes, 1)
                results[mode, concurrency]["batch"] = batch
        finally:
            server.terminate()
            server.wait(timeout=30)

    print(machine())
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; model: {model}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"{'mode':<12} {'conc':>4} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'rows/pass':>9}"
    )
    for (mode, concurrency), row in results.items():
        print(
            f"{mode:<12} {concurrency:>4} {row['requests']:>8} {row['errors']:>6} "
            f"{row['rate']:>8.1f} {row['p50']:>8.1f} {row['p99']:>8.1f} {row['batch']:>9.1f}"
        )
    top = max(levels)
    ratio = results["batching", top]["rate"] / results["no batching", top]["rate"]
    errors = sum(row["errors"] for row in results.values())
    print(f"throughput ratio at concurrency {top}, batching / no batching: {ratio:.2f}x")
    print(
        f"errors: {errors}; {'PASS' if ratio >= 2 and errors == 0 else 'FAIL'} (needs >= 2x, 0 errors)"
    )


if __name__ == "__main__":
    main()
