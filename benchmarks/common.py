"""Helpers shared by the benchmark scripts: paths to the shared data sets and the machine line."""

from __future__ import annotations

import os
import platform
import resource
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"


def require(path: Path) -> Path:
    if not path.exists():
        sys.exit(f"{path} is missing: the benchmarks read ../shared/datasets beside the project")
    return path


def machine() -> str:
    return (
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), python {platform.python_version()}"
    )


def peak_memory_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
