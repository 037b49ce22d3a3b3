"""Cores a process may use: the affinity mask, capped by a container's CPU quota; memory it
may take; how its allocator keeps freed memory."""

import os
import subprocess
import sys

import pytest
import torch

from polymodal import machine


def cgroup_v2(tmp_path, line: str):
    (tmp_path / "cpu.max").write_text(line + "\n")
    return tmp_path


def cgroup_v1(tmp_path, quota_us: int, period_us: int = 100000):
    folder = tmp_path / "cpu"
    folder.mkdir()
    (folder / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
    (folder / "cpu.cfs_period_us").write_text(f"{period_us}\n")
    return tmp_path


def affinity() -> int:
    return len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("line", "quota"), [("200000 100000", 2.0), ("150000 100000", 1.5), ("max 100000", None)]
)
def test_cgroup_v2_quota(tmp_path, line, quota):
    assert machine.cpu_quota(cgroup_v2(tmp_path, line)) == quota


@pytest.mark.parametrize(("quota_us", "quota"), [(50000, 0.5), (-1, None)])
def test_cgroup_v1_quota(tmp_path, quota_us, quota):
    assert machine.cpu_quota(cgroup_v1(tmp_path, quota_us)) == quota


def test_no_cgroup_files_is_no_limit(tmp_path):
    assert machine.cpu_quota(tmp_path) is None
    assert machine.usable_cores(tmp_path) == affinity()


def test_a_quota_below_the_cores_caps_them_rounding_up(tmp_path):
    assert machine.usable_cores(cgroup_v2(tmp_path, "50000 100000")) == 1
    assert machine.usable_cores(cgroup_v2(tmp_path, f"{affinity() * 400000} 100000")) == affinity()
    if affinity() >= 2:
        assert machine.usable_cores(cgroup_v2(tmp_path, "150000 100000")) == 2


def test_torch_threads_are_lowered_to_the_cores_never_raised(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        monkeypatch.setattr(machine, "usable_cores", lambda: 2)
        machine.fit_torch_threads_to_cores()
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        machine.fit_torch_threads_to_cores()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def meminfo(tmp_path, available_kb: int):
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:       99999999 kB\nMemAvailable:   {available_kb} kB\n")
    return path


def test_available_memory_is_the_kernels_estimate_capped_by_a_containers_room(tmp_path):
    info = meminfo(tmp_path, 2_000_000)
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    assert machine.available_memory(cgroup, info) == 2_000_000 * 1024  # no limit set
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.current").write_text("5\n")
    assert machine.available_memory(cgroup, info) == 2_000_000 * 1024
    (cgroup / "memory.max").write_text(f"{1024**3}\n")
    (cgroup / "memory.current").write_text(f"{512 * 1024**2}\n")
    assert machine.available_memory(cgroup, info) == 512 * 1024**2  # the container's room
    assert machine.available_memory(cgroup, tmp_path / "none") == 512 * 1024**2
    (cgroup / "memory.current").write_text(f"{1024**3}\n")  # a container at its limit
    assert machine.available_memory(cgroup, info) == 0
    assert machine.available_memory(tmp_path / "none", tmp_path / "none") is None


def test_cgroup_v1_memory_room(tmp_path):
    folder = tmp_path / "memory"
    folder.mkdir()
    (folder / "memory.limit_in_bytes").write_text(f"{2**63 - 4096}\n")  # v1's "no limit"
    (folder / "memory.usage_in_bytes").write_text("100\n")
    assert machine.cgroup_memory_room(tmp_path) is None
    (folder / "memory.limit_in_bytes").write_text("1000\n")
    assert machine.cgroup_memory_room(tmp_path) == 900


# A small convolutional network predicting batch after batch; prints whether the malloc
# settings were applied and the page faults of five passes after two warm-up passes.
BATCHES_IN_A_FRESH_PROCESS = """
import resource, sys, torch
from polymodal.machine import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else False
torch.set_num_threads(1)
net = torch.nn.Sequential(
    torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, padding=1),
    torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32 * 14 * 14, 10),
).eval()
images = torch.randn(256, 1, 28, 28)
def passes(count):
    with torch.inference_mode():
        for _ in range(count):
            for start in range(0, 256, 64):
                net(images[start : start + 64])
passes(2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
passes(5)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_of_batches(setting: str) -> tuple[bool, int]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environment.pop("GLIBC_TUNABLES", None)
    result = subprocess.run(
        [sys.executable, "-c", BATCHES_IN_A_FRESH_PROCESS, setting],
        capture_output=True, text=True, env=environment, check=True, timeout=120,
    )  # fmt: skip
    applied, faults = result.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_freed_memory_is_reused_by_the_next_batch_not_faulted_in_again():
    applied, reused = faults_of_batches("reuse")
    _, default = faults_of_batches("default")
    assert applied
    assert reused * 10 < default, (reused, default)  # glibc's own thresholds: 76,000 here


@pytest.mark.parametrize(
    "setting",
    [{"MALLOC_TRIM_THRESHOLD_": "4096"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=4096"}],
)
def test_malloc_settings_chosen_in_the_environment_are_kept(monkeypatch, setting):
    for name, value in setting.items():
        monkeypatch.setenv(name, value)
    assert machine.reuse_freed_memory.__wrapped__() is False


def test_only_linux_gets_the_malloc_settings(monkeypatch):
    monkeypatch.setattr(machine.sys, "platform", "darwin")
    assert machine.reuse_freed_memory.__wrapped__() is False
