"""What preprocessing hands to the model for one input column."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

# Rows are normalised in float32 blocks of about this size: small enough to stay in the
# processor's cache and to reuse freed memory; a 48 MB block of 3,000 spectrograms cost 5× more
# (page faults on fresh memory, then misses), 53 ms against 8-10 ms for blocks of 1-4 MB.
BLOCK_BYTES = 2**21


@dataclass
class FeatureColumn:
    """Features for every row of one input.

    `values` holds one array per row stacked on axis 0; `present` is False where the row's
    input is missing or could not be decoded (the model masks it, never reads zeros as data);
    `lengths` counts the valid steps of variable-length inputs (audio frames, text tokens).
    """

    values: np.ndarray
    present: np.ndarray
    lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.present)

    def take(self, rows: np.ndarray) -> FeatureColumn:
        lengths = None if self.lengths is None else self.lengths[rows]
        return FeatureColumn(self.values[rows], self.present[rows], lengths)


def is_missing(value: object) -> bool:
    """True for None, NaN and blank strings: a cell with nothing in it."""
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


REPLACEMENT_CHARACTER = "\ufffd"
NOT_UTF8 = "text is not valid UTF-8"


def cell_text(cell: object) -> tuple[str | None, str | None]:
    """(text, problem) of a text-like cell (free text, a category): bytes must be UTF-8, and
    U+FFFD marks bytes the table reader could not decode. Missing cells give (None, None)."""
    if is_missing(cell):
        return None, None
    if isinstance(cell, bytes):
        try:
            cell = cell.decode("utf-8")
        except UnicodeDecodeError:
            return None, NOT_UTF8
    text = str(cell)
    if REPLACEMENT_CHARACTER in text:
        return None, NOT_UTF8
    return text, None


def category_text(cell: object) -> str:
    """The category a cell names (also used for class labels)."""
    if isinstance(cell, bytes):
        return cell.decode("utf-8", errors="replace").strip()
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))  # 3.0 read from a column with blanks is the category "3"
    return str(cell).strip()


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Decoders' tensor work (a spectrogram's small FFTs) on one thread: spread over two it
    took 0.6 ms a file alone and 17 ms with the other core busy (threads waiting for each
    other), measured on this project's 2-core machine. Normalising a column read back from
    the cache, too: a few elementwise passes, where waking a second thread costs more than
    it saves."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def normalised_float16(
    raw: np.ndarray, mean: np.ndarray | float, std: np.ndarray | float, real: np.ndarray
) -> np.ndarray:
    """(raw - mean) / std where `real` (broadcast against `raw`) and 0 elsewhere, as float16.

    Computed with torch in float32 blocks of rows: numpy converts to and from float16 element
    by element, about 15× slower than torch, which made normalising a column read back from
    the cache cost more than the network's pass over it."""
    out = np.empty(raw.shape, dtype=np.float16)
    written = torch.from_numpy(out)
    shift = torch.as_tensor(np.asarray(mean, dtype=np.float32))
    scale = 1.0 / torch.as_tensor(np.asarray(std, dtype=np.float32))
    row_bytes = 4 * max(1, int(np.prod(raw.shape[1:])))
    step = max(1, BLOCK_BYTES // row_bytes)
    with one_torch_thread():
        for start in range(0, len(raw), step):
            rows = slice(start, start + step)
            block = torch.from_numpy(raw[rows]).float().sub_(shift).mul_(scale)
            block.mul_(torch.from_numpy(np.ascontiguousarray(real[rows])))
            written[rows].copy_(block)
    return out
