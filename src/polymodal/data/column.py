"""What preprocessing hands to the model for one input column."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CHUNK_ROWS = 4096  # rows normalised at once in float32, bounding the extra memory


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


def normalised_float16(
    raw: np.ndarray, mean: np.ndarray | float, std: np.ndarray | float, real: np.ndarray
) -> np.ndarray:
    """(raw - mean) / std where `real` (broadcast against `raw`) and 0 elsewhere, as float16.

    Computed with torch in float32 blocks of rows: numpy converts to and from float16 element
    by element, about 15× slower than torch, which made normalising a column read back from
    the cache cost more than the network's pass over it."""
    out = np.empty(raw.shape, dtype=np.float16)
    shift = torch.as_tensor(np.asarray(mean, dtype=np.float32))
    scale = 1.0 / torch.as_tensor(np.asarray(std, dtype=np.float32))
    for start in range(0, len(raw), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        block = torch.from_numpy(raw[rows]).float().sub_(shift).mul_(scale)
        block.mul_(torch.from_numpy(np.ascontiguousarray(real[rows])))
        out[rows] = block.half().numpy()
    return out
