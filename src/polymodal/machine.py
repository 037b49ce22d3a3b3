"""How many cores and how much memory this process may use, a container's limits included,
and how its memory allocator should treat the memory every batch frees."""

from __future__ import annotations

import ctypes
import functools
import math
import os
import sys
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


# glibc's malloc settings (malloc.h): the free memory at the top of the heap kept for reuse,
# and the request size from which a block gets its own mapping (returned to the kernel when freed).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
HEAP_KEPT_BYTES = 256 * 2**20
OWN_MAPPING_BYTES = 32 * 2**20  # the highest value glibc's moving threshold itself reaches
MALLOC_ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


@functools.cache
def reuse_freed_memory() -> bool:
    """Have glibc's malloc keep up to `HEAP_KEPT_BYTES` of freed memory at the top of each of
    its heaps for the next batch instead of handing it back to the kernel. True where the
    settings were applied.

    Each batch allocates and frees the same activations. glibc moves its thresholds with the
    history of frees, and in some processes it ends up trimming the top of its heap after every
    batch, so the next one faults the same memory in again, a zeroed page at a time: predicting
    3,000 AV-MNIST rows (batch 256) faulted 4,000-5,800 times a pass in most processes and
    30,000-36,000 times in some, a quarter slower; with fixed thresholds, under twenty.
    Process-wide, as torch's thread count is; skipped where the C library is not glibc or the
    environment already chooses malloc settings (`MALLOC_*_`, `glibc.malloc` tunables)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if not sys.platform.startswith("linux") or "glibc.malloc." in tunables:
        return False
    if any(name in os.environ for name in MALLOC_ENVIRONMENT):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (glibc's own: musl's mallopt does nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    kept = mallopt(M_TRIM_THRESHOLD, HEAP_KEPT_BYTES)
    return bool(kept and mallopt(M_MMAP_THRESHOLD, OWN_MAPPING_BYTES))


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
