"""How many cores and how much memory this process may use, a container's limits included."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
MEMINFO = Path("/proc/meminfo")


def cpu_quota(root: Path = CGROUP) -> float | None:
    """The CPU time this process's cgroup may use per second (2.0: two cores' worth), or None
    where it sets no limit. Docker's `--cpus` and Kubernetes' CPU limits set it, and neither
    `os.cpu_count` nor the affinity mask shows it: both still count the host's cores."""
    try:  # cgroup v2: "<quota> <period>" or "max <period>"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1: a quota of -1 is no limit
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def usable_cores(root: Path = CGROUP) -> int:
    """The cores this process may run on (its affinity mask), capped by its CPU quota."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    quota = cpu_quota(root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def fit_torch_threads_to_cores() -> None:
    """Torch starts a thread per core it sees, the host's under a container quota; with more
    threads than the quota's cores they spin-wait for each other while the quota throttles
    them, and small models run several times slower. Never raises a count set lower."""
    import torch

    cores = usable_cores()
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)


def available_memory(root: Path = CGROUP, meminfo: Path = MEMINFO) -> int | None:
    """Bytes this process could still take: the kernel's estimate of what it can hand out
    without swapping (MemAvailable: free memory and page cache it can drop), less where a
    container's memory limit leaves less room. None where neither can be read."""
    readings = (mem_available(meminfo), cgroup_memory_room(root))
    estimates = [value for value in readings if value is not None]
    return min(estimates) if estimates else None


def mem_available(meminfo: Path = MEMINFO) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file counts in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_memory_room(root: Path = CGROUP) -> int | None:
    """A container's memory limit less what its processes use (cgroup v2, then v1); None
    where no limit is set."""
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        try:
            limit = (root / limit_file).read_text().strip()
            usage = int((root / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 2**60:  # v1 writes "no limit" as a huge number
            return None
        return max(0, int(limit) - usage)
    return None
