"""Prepared features on disk: `.npy` files written a chunk of rows at a time and read a batch
of rows at a time, so memory stays flat however many rows a table has.

The format is numpy's own `.npy` (a header, then the rows back to back): any tool reads it
(`np.load(path, mmap_mode="r")`), a row is found by arithmetic, and nothing needs a new
dependency. Reading uses `os.preadv` into a fresh array rather than a memory map: pages of a
mapped file that training touches stay in the process's resident memory, so a memory-mapped
epoch over a large table would grow it to the table's size; pages read with `pread` belong to
the kernel's page cache, which keeps the hot ones and drops the rest under pressure.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


class ArrayWriter:
    """An `.npy` file of `rows` rows, appended a chunk at a time (of any row count); the
    header is written with the first chunk, whose per-row shape and dtype it fixes."""

    def __init__(self, path: str | Path, rows: int) -> None:
        self.path = Path(path)
        self.rows = rows
        self.written = 0
        self.row_shape: tuple[int, ...] | None = None
        self.dtype: np.dtype | None = None
        self._handle = None

    def append(self, chunk: np.ndarray) -> None:
        chunk = np.ascontiguousarray(chunk)
        if self._handle is None:
            self.row_shape, self.dtype = chunk.shape[1:], chunk.dtype
            self._handle = open(self.path, "wb")  # noqa: SIM115 (closed by close())
            header = {
                "descr": np.lib.format.dtype_to_descr(chunk.dtype),
                "fortran_order": False,
                "shape": (self.rows, *self.row_shape),
            }
            np.lib.format.write_array_header_1_0(self._handle, header)
        elif chunk.shape[1:] != self.row_shape or chunk.dtype != self.dtype:
            raise ValueError(
                f"{self.path.name}: a chunk of rows shaped {chunk.shape[1:]} {chunk.dtype} after "
                f"rows shaped {self.row_shape} {self.dtype}"
            )
        if self.written + len(chunk) > self.rows:
            raise ValueError(f"{self.path.name}: more than the {self.rows} rows announced")
        self._handle.write(chunk.data)
        self.written += len(chunk)

    def close(self) -> None:
        if self._handle is None:
            raise ValueError(f"{self.path.name}: no rows were written")
        self._handle.close()
        if self.written != self.rows:
            raise ValueError(f"{self.path.name}: {self.written} rows written of {self.rows}")


_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class DiskArray:
    """Rows of an `.npy` file read on demand: `array[index]` (an integer tensor, array or
    list, in any order, repeats allowed) returns a tensor of those rows, as indexing an
    in-memory tensor would. The file descriptor opens lazily, once per process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            read_header = _HEADER_READERS[np.lib.format.read_magic(handle)]
            shape, fortran, dtype = read_header(handle)
            self.offset = handle.tell()
        if fortran:
            raise ValueError(f"{self.path}: Fortran-ordered arrays are not rows on disk")
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.row_bytes * len(self)

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getitem__(self, index: object) -> torch.Tensor:
        rows = np.asarray(index.numpy() if isinstance(index, torch.Tensor) else index)
        if rows.ndim != 1 or rows.dtype.kind not in "iu":
            raise TypeError(f"{self.path.name}: index rows with a 1-d integer array")
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"{self.path.name}: rows outside 0..{len(self) - 1}")
        self._read_rows(rows, out)
        return torch.from_numpy(out)

    def _read_rows(self, rows: np.ndarray, out: np.ndarray) -> None:
        """One `preadv` per run of consecutive rows (in the order asked): an evaluation pass
        over sorted rows reads in a few large requests, a shuffled batch row by row."""
        if not len(rows):
            return
        fd, flat = self._descriptor(), out.reshape(len(rows), -1).view(np.uint8)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for start, stop in zip(
            np.concatenate([[0], breaks]).tolist(),
            np.concatenate([breaks, [len(rows)]]).tolist(),
            strict=True,
        ):
            buffer = memoryview(flat[start:stop]).cast("B")
            position = self.offset + int(rows[start]) * self.row_bytes
            while len(buffer):
                read = os.preadv(fd, [buffer], position)
                if read <= 0:
                    raise OSError(f"{self.path}: the file ends before row {rows[start]}")
                buffer, position = buffer[read:], position + read

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": -1}
