"""Helpers shared by the benchmark scripts: paths to the shared data sets and the machine line."""

from __future__ import annotations

import gzip
import os
import platform
import resource
import sys
from pathlib import Path

import numpy as np
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


def read_mnist(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's test set from its IDX gzip files: images (10000, 28, 28) uint8 and labels."""
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as handle:
        data = handle.read()
    count, rows, cols = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    images = np.frombuffer(data, np.uint8, offset=16).reshape(count, rows, cols)
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    return images, labels
