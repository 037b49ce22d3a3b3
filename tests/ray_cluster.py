"""A real Ray cluster on 127.0.0.1 for the tests that run polymodal on Ray (predict, embed,
train): one head, started with `ray start` and stopped with `ray stop` at the end."""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import polymodal
from tests.serving.conftest import free_port

RAY = Path(sys.executable).with_name("ray")
SOURCE = Path(polymodal.__file__).resolve().parents[1]

# Ray turns 127.0.0.1 into this machine's outward address (and refuses a head on loopback)
# unless it runs as a one-machine cluster, which this variable asks for.
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# One token for every cluster of the test session: Ray reads it when first imported, so a
# second cluster with a token of its own would refuse the test process's connections.
TOKEN = secrets.token_hex(32)


@contextmanager
def local_ray_cluster(cpus: int = 2) -> Iterator[str]:
    """A Ray head of `cpus` CPUs on 127.0.0.1 with its own temp folder and auth token (nothing
    written under ~/.ray), its address inside the block; stopped, and its folder removed,
    after. Its processes import polymodal from this checkout. Skips without ray."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install 'polymodal[scale]')")
    port, folder = free_port(), Path(tempfile.mkdtemp(prefix="ray-"))
    saved = {name: os.environ.get(name) for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", *LOOPBACK)}
    # Set before ray is imported: it reads both at import.
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN, **LOOPBACK)
    from ray._private import ray_constants as constants

    saved_constant = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False  # in case another test imported ray before
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SOURCE), str(SOURCE.parent)])}
    start = [str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    start += ["--num-cpus", str(cpus), "--include-dashboard", "false", "--disable-usage-stats"]
    start += ["--temp-dir", str(folder)]
    try:
        subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
        constants.ENABLE_RAY_CLUSTER = saved_constant
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
