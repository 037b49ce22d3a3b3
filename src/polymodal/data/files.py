"""The loop shared by columns of file paths: resolve, read, cache, decode, report.

A column of many files is decoded by worker processes (`--workers` / `train.workers`, else
`POLYMODAL_WORKERS`, default: every core this process may use), forked so that a modality's decoder, often a closure over its
settings, reaches them without pickling.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np

from polymodal.config import ConfigError
from polymodal.data.cache import FeatureCache, content_key, settings_key
from polymodal.data.column import is_missing, one_torch_thread
from polymodal.data.problems import DecodeError, ProblemLog
from polymodal.machine import usable_cores
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


def path_texts(cells: Sequence[object], base_dir: str) -> list[str | None]:
    """`path_text` of every cell, None for a missing one, in one pass: a column of thousands
    of cached files is read back in about a tenth of a second, and this was a quarter of it."""
    if os.sep != "/":
        return [None if is_missing(cell) else path_text(cell, base_dir) for cell in cells]
    prefix = base_dir if not base_dir or base_dir.endswith("/") else base_dir + "/"
    out: list[str | None] = []
    for cell in cells:
        if (
            isinstance(cell, str) and cell and cell[0] != "~"
            and not cell[0].isspace() and not cell[-1].isspace()
        ):  # fmt: skip
            out.append(cell if cell[0] == "/" else prefix + cell)  # the common case, as is
        else:
            out.append(None if is_missing(cell) else path_text(cell, base_dir))
    return out


def encoded_column_key(
    cells: Sequence[object], base_dir: Path, settings: dict, cache: FeatureCache
) -> str | None:
    """The key of a column's encoded features in `cache`: `settings` (the modality's fitted
    state), which row names which file, and the files as they are on disk now; None when the
    column gets none (cache off, fewer than `MIN_BLOCK_FILES` files, a file just modified)."""
    paths = path_texts(cells, str(base_dir))
    distinct = list(dict.fromkeys(path for path in paths if path is not None))
    rows = "\0".join("\1" if path is None else path for path in paths)  # \1: a missing cell
    named = {**settings, "rows": content_key(rows.encode())}
    return cache.fingerprint(distinct, settings_key(named))


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
    paths = path_texts(cells, str(base_dir))
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
    decoded = progress_bar(decode_each(paths, decode, key, cache), len(paths), f"decode {column}")
    results = dict(zip(paths, decoded, strict=True))
    if fingerprint is not None:
        cache.put_block(key, fingerprint, list(results.values()))
    return results


MIN_PARALLEL_FILES = 256  # fewer files decode faster than worker processes start
CHUNK_FILES = 64  # files per task sent to a worker: few round trips, a smooth progress bar


_CHOSEN_WORKERS: ContextVar[int | None] = ContextVar("decode_workers", default=None)


@contextmanager
def decoding_workers(count: int | None) -> Iterator[None]:
    """Decode files with `count` processes inside the block (None: `decode_workers()`'s
    default); `train.workers`, `--workers` on the command line."""
    token = _CHOSEN_WORKERS.set(count)
    try:
        yield
    finally:
        _CHOSEN_WORKERS.reset(token)


def decode_workers() -> int:
    """The count chosen by `decoding_workers`, else $POLYMODAL_WORKERS, else the number of
    cores this process may run on (a container's CPU limit included)."""
    chosen = _CHOSEN_WORKERS.get()
    if chosen is not None:
        return max(1, chosen)
    given = os.environ.get("POLYMODAL_WORKERS", "").strip()
    if given:
        if not given.isdigit():
            raise ConfigError(
                f"POLYMODAL_WORKERS must be a whole number of processes, not {given!r}"
            )
        return max(1, int(given))
    return usable_cores()


def decode_each(
    paths: list[str], decode: Decoder, key: str, cache: FeatureCache
) -> Iterator[np.ndarray | str]:
    """`_decode_one` over `paths`, in order: in this process for a few files or where fork is
    unsafe (`fork_is_safe`), else spread over `decode_workers()` forked processes."""
    workers = min(decode_workers(), -(-len(paths) // CHUNK_FILES))
    chunks = [paths[start : start + CHUNK_FILES] for start in range(0, len(paths), CHUNK_FILES)]
    if workers < 2 or len(paths) < MIN_PARALLEL_FILES or not fork_is_safe():
        for chunk in chunks:
            with one_torch_thread():
                results = [_decode_one(Path(path), decode, key, cache) for path in chunk]
            yield from results
        return
    global _WORK
    _WORK = (decode, key, cache)  # inherited by the forked workers
    try:
        with default_sigterm():  # the workers are forked here and keep it
            pool = multiprocessing.get_context("fork").Pool(workers, _start_worker)
        with pool:
            for results, hits, misses in pool.imap(_decode_chunk, chunks):
                cache.hits += hits
                cache.misses += misses
                yield from results
    finally:
        _WORK = None


def fork_is_safe() -> bool:
    """Whether decoding workers may be forked from this process: on Linux, and not in a
    process connected to Ray (a driver or a Ray worker), whose threads (gRPC among them) can
    leave a forked child stuck on a lock; Ray's own workers already fill the cores."""
    if not sys.platform.startswith("linux"):
        return False
    ray = sys.modules.get("ray")
    return ray is None or not ray.is_initialized()


@contextmanager
def default_sigterm() -> Iterator[None]:
    """SIGTERM at its default action while the block forks, so the pool's `terminate` kills
    every worker. A Python handler in the parent (`ray.init` sets one, and keeps it after
    `ray.shutdown`) would be inherited, and it runs only between bytecodes: a worker stuck in
    C code, as a child forked beside foreign threads can be, would outlive the SIGTERM and the
    pool would wait for it forever (seen in CI: a 600 s test timeout). Only the main thread
    may change handlers, and one set from C cannot be put back: then nothing is changed."""
    current = signal.getsignal(signal.SIGTERM)
    if current is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, current)


_WORK: tuple[Decoder, str, FeatureCache] | None = None


def _start_worker() -> None:
    """Default SIGTERM also in a worker forked later (the pool replaces one that died, from a
    thread of its own, where `default_sigterm` cannot act). One torch thread per worker: the
    workers already fill the cores."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import torch

    torch.set_num_threads(1)


def _decode_chunk(paths: list[str]) -> tuple[list[np.ndarray | str], int, int]:
    """In a worker: each file's result, and the cache hits and misses they made."""
    assert _WORK is not None
    decode, key, cache = _WORK
    hits, misses = cache.hits, cache.misses
    results = [_decode_one(Path(path), decode, key, cache) for path in paths]
    return results, cache.hits - hits, cache.misses - misses


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
    if arrays and all(array is not None and array.shape == shape for array in arrays):
        return np.stack(arrays).astype(dtype, copy=False)  # in C, not a row at a time
    block = np.zeros((len(arrays), *shape), dtype=dtype)
    for index, array in enumerate(arrays):
        if array is not None:
            block[index] = array
    return block
