"""The loop shared by columns of file paths: resolve, read, cache, decode, report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from polymodal.data.cache import FeatureCache, content_key, settings_key
from polymodal.data.column import is_missing
from polymodal.data.problems import DecodeError, ProblemLog
from polymodal.progress import progress_bar

Decoder = Callable[[Path, bytes], np.ndarray]


def resolve_path(cell: object, base_dir: Path) -> Path:
    path = Path(str(cell).strip()).expanduser()
    return path if path.is_absolute() else base_dir / path


def decode_file_column(
    cells: Sequence[object],
    *,
    column: str,
    base_dir: Path,
    decode: Decoder,
    settings: dict,
    log: ProblemLog,
    cache: FeatureCache,
    row_ids: Sequence[int] | None = None,
) -> list[np.ndarray | None]:
    """Decode each cell's file; None where the cell is empty or the file is bad.

    Bad files are logged with their row and reason. Each distinct file is decoded once per
    call, and each distinct content once per settings across runs (the feature cache).
    """
    key = settings_key(settings)
    seen: dict[Path, np.ndarray | None] = {}
    out: list[np.ndarray | None] = []
    rows = row_ids if row_ids is not None else range(len(cells))
    for row, cell in progress_bar(zip(rows, cells, strict=True), len(cells), f"decode {column}"):
        if is_missing(cell):
            out.append(None)
            continue
        path = resolve_path(cell, base_dir)
        if path not in seen:
            seen[path] = _decode_one(path, decode, key, cache)
        result = seen[path]
        if isinstance(result, str):
            log.add(int(row), column, str(cell), result)
            out.append(None)
        else:
            out.append(result)
    return out


def _decode_one(path: Path, decode: Decoder, key: str, cache: FeatureCache) -> np.ndarray | str:
    """The decoded array, or the reason it could not be made."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "file not found"
    except OSError as error:
        return f"cannot read file: {error.strerror or error}"
    if not data:
        return "file is empty"
    content = content_key(data)
    cached = cache.get(content, key)
    if cached is not None:
        return cached
    try:
        array = decode(path, data)
    except DecodeError as error:
        return str(error)
    cache.put(content, key, array)
    return array


def stack_padded(
    arrays: list[np.ndarray | None], shape: tuple[int, ...], dtype: type
) -> np.ndarray:
    """Stack per-row arrays into one block; rows that are None stay zero (and are masked)."""
    block = np.zeros((len(arrays), *shape), dtype=dtype)
    for index, array in enumerate(arrays):
        if array is not None:
            block[index] = array
    return block
