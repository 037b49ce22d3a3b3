"""The loop shared by columns of file paths: resolve, read, cache, decode, report."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from polymodal.data.cache import FeatureCache, content_key, settings_key
from polymodal.data.column import is_missing
from polymodal.data.problems import DecodeError, ProblemLog
from polymodal.progress import progress_bar

Decoder = Callable[[Path, bytes], np.ndarray]


def resolve_path(cell: object, base_dir: Path) -> Path:
    return Path(path_text(cell, base_dir))


def path_text(cell: object, base_dir: Path | str) -> str:
    """A cell's path as a string: `resolve_path` without pathlib's cost, which shows on
    columns of thousands of files read back from the cache."""
    text = str(cell).strip()
    if text.startswith("~"):
        text = os.path.expanduser(text)
    return text if os.path.isabs(text) else os.path.join(base_dir, text)


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
    base = str(base_dir)
    paths = [None if is_missing(cell) else path_text(cell, base) for cell in cells]
    distinct = list(dict.fromkeys(path for path in paths if path is not None))
    results = decode_distinct(distinct, decode, settings, cache, column)
    out: list[np.ndarray | None] = []
    rows = row_ids if row_ids is not None else range(len(cells))
    for row, cell, path in zip(rows, cells, paths, strict=True):
        result = None if path is None else results[path]
        if isinstance(result, str):
            log.add(int(row), column, str(cell), result)
            out.append(None)
        else:
            out.append(result)
    return out


def decode_distinct(
    paths: list[str], decode: Decoder, settings: dict, cache: FeatureCache, column: str
) -> dict[str, np.ndarray | str]:
    """Each file's array or the reason it could not be made: from the column's block when one
    matches the files as they are on disk, else file by file (and then stored as a block)."""
    key = settings_key(settings)
    fingerprint = cache.fingerprint(paths, key)
    if fingerprint is not None:
        block = cache.get_block(key, fingerprint)
        if block is not None and len(block) == len(paths):
            return dict(zip(paths, block, strict=True))
    results = {
        path: _decode_one(Path(path), decode, key, cache)
        for path in progress_bar(paths, len(paths), f"decode {column}")
    }
    if fingerprint is not None:
        cache.put_block(key, fingerprint, list(results.values()))
    return results


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
