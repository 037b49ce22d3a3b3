"""On-disk cache of decoded features, keyed by file content and preprocessing settings.

Decoding images, audio and video is the slow part of reading a table. Keying by the file's
bytes (not its path or time stamp) means a renamed or copied file is still a hit and an
edited file is never a stale hit; keying by the settings means a changed sample rate or
image size never reuses features made under the old one.

Reading thousands of small entries back (open, hash, load each) costs more than a cheap
network spends on the same rows, so a column of many files is also kept as one *block*:
every file's features in one array, found by a fingerprint of the files' paths, sizes,
modification and change times and inodes (a file rewritten in place with its old time stamp
restored still changes its change time). A block is only written when every file is older than
`RACY_SECONDS` (git's rule for racily clean files: a file written within the clock's
granularity of the fingerprint could change without its time stamp changing), so an edited
file never matches an old block; otherwise the per-file entries are used, as before.

The last layer is a column's *encoded* features (padded, normalised, as the network reads
them), keyed by the same fingerprint of the files plus the modality's fitted state and which
row names which file: predicting or evaluating a table again then reads a few arrays instead
of gathering thousands of files' features and normalising them (this was a fifth of
`Model.predict`'s time on AV-MNIST). The problems met while encoding (bad files) are stored
with it and reported again on each read.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

RACY_SECONDS = 2.0  # files modified more recently than this get no block
MIN_BLOCK_FILES = 512  # smaller columns read their entries one by one, fast enough
BLOCKS_KEPT = 64  # per settings key (`predict` writes one per chunk); older ones are removed
MAX_BLOCK_BYTES = 2**31  # a larger column keeps only its per-file entries
COLUMN_BYTES_KEPT = 2**30  # encoded columns of any table and state, newest first; older go


def default_cache_dir() -> Path:
    """$POLYMODAL_CACHE, else $XDG_CACHE_HOME/polymodal/features, else ~/.cache/..."""
    if os.environ.get("POLYMODAL_CACHE"):
        return Path(os.environ["POLYMODAL_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "polymodal" / "features"


def settings_key(settings: dict) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class FeatureCache:
    """Arrays stored as .npy files under `root/<settings key>/<content key>.npy`.

    `enabled=False` keeps the interface but stores nothing (for tests and one-off calls).
    """

    def __init__(self, root: str | Path | None = None, enabled: bool = True) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self.block_hits = 0
        self.column_hits = 0
        self._folders: set[str] = set()  # entry folders known to exist

    def _path(self, content: str, settings: str) -> str:
        """A string, not a Path: a cold run writes an entry per file, thousands of them, and
        pathlib's parsing was a tenth of the time spent on each."""
        return os.path.join(self.root, settings, content[:2], f"{content}.npy")

    def get(self, content: str, settings: str) -> np.ndarray | None:
        if not self.enabled:
            return None
        path = self._path(content, settings)
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return array

    def put(self, content: str, settings: str, array: np.ndarray) -> None:
        if not self.enabled:
            return
        path = self._path(content, settings)
        folder = os.path.dirname(path)
        if folder not in self._folders:  # one mkdir per folder, not per file
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        try:
            save_array(path, array)
        except FileNotFoundError:  # the folder was removed meanwhile
            os.makedirs(folder, exist_ok=True)
            save_array(path, array)

    # ------------------------------------------------------------------ column blocks
    def fingerprint(self, paths: Sequence[str | Path], settings: str) -> str | None:
        """The key of a block for these files as they are on disk now; None when there
        should be no block (cache off, too few files, or a file modified too recently)."""
        if not self.enabled or len(paths) < MIN_BLOCK_FILES:
            return None
        stamps = file_stamps(paths)
        if stamps[:, 1].max() > time.time_ns() - int(RACY_SECONDS * 1e9):
            return None
        digest = hashlib.sha256(settings.encode())
        digest.update("\0".join(map(str, paths)).encode())
        digest.update(stamps.tobytes())
        return digest.hexdigest()[:32]

    def _block_paths(self, settings: str, fingerprint: str) -> tuple[Path, Path]:
        """The block's index (offsets, shapes, errors) and its data, a plain .npy: numpy reads
        it in one call, where a member of an .npz is read through zipfile's CRC check."""
        folder = self.root / settings / "blocks"
        return folder / f"{fingerprint}.index.npz", folder / f"{fingerprint}.data.npy"

    def get_block(self, settings: str, fingerprint: str) -> list[np.ndarray | str] | None:
        """Each file's array, or the reason it could not be decoded, in the order stored."""
        index_path, data_path = self._block_paths(settings, fingerprint)
        try:
            with np.load(index_path, allow_pickle=False) as index:
                offsets, shapes = index["offsets"], index["shapes"]
                ndims, errors = index["ndims"], index["errors"]
            data = np.load(data_path, allow_pickle=False)
        except (OSError, ValueError, KeyError):
            return None
        if data.shape != (int(offsets[-1]),):  # a data file from another write of this key
            return None
        self.block_hits += 1
        return split_block(data, offsets, shapes, ndims, errors)

    def put_block(self, settings: str, fingerprint: str, items: Sequence[np.ndarray | str]) -> None:
        """Store one column's results as a block (skipped when the arrays' types differ or
        they would take more than `MAX_BLOCK_BYTES`)."""
        arrays = [item for item in items if not isinstance(item, str)]
        if len({a.dtype for a in arrays}) > 1 or sum(a.nbytes for a in arrays) > MAX_BLOCK_BYTES:
            return
        dtype = arrays[0].dtype if arrays else np.dtype(np.float32)
        ndims = np.array([-1 if isinstance(i, str) else i.ndim for i in items], dtype=np.int64)
        shapes = np.zeros((len(items), max(1, int(ndims.max(initial=0)))), dtype=np.int64)
        sizes = np.zeros(len(items), dtype=np.int64)
        for index, item in enumerate(items):
            if not isinstance(item, str):
                shapes[index, : item.ndim] = item.shape
                sizes[index] = item.size
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        data = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, dtype)
        errors = np.array([i if isinstance(i, str) else "" for i in items], dtype=str)
        index_path, data_path = self._block_paths(settings, fingerprint)
        index_path.parent.mkdir(parents=True, exist_ok=True)
        # The data first, the index last: a block is found by its index, so a reader never
        # meets an index without its data (and checks the data's length against it).
        save_array(data_path, data)
        write_atomically(
            index_path,
            lambda handle: np.savez(
                handle, offsets=offsets, shapes=shapes, ndims=ndims, errors=errors
            ),
        )
        self._prune_blocks(index_path.parent)

    def _prune_blocks(self, folder: Path) -> None:
        """Keep the `BLOCKS_KEPT` most recently written blocks of one settings key: blocks
        duplicate the per-file entries, and every new subset of rows would add one. Blocks of
        the older one-file format (`<key>.npz`) go too."""

        indexes = sorted(folder.glob("*.index.npz"), key=written, reverse=True)
        for stale in indexes[BLOCKS_KEPT:]:
            stale.unlink(missing_ok=True)
            stale.with_name(stale.name.replace(".index.npz", ".data.npy")).unlink(missing_ok=True)
        for old in folder.glob("*.npz"):
            if not old.name.endswith(".index.npz"):
                old.unlink(missing_ok=True)

    # ------------------------------------------------------------------ encoded columns
    def get_column(self, key: str) -> tuple[dict[str, np.ndarray], list[dict]] | None:
        """The arrays and problems `put_column` stored under `key`, or None."""
        if not self.enabled:
            return None
        folder = self.root / "columns"
        try:
            index = json.loads((folder / f"{key}.json").read_text())
            arrays = {
                name: np.load(folder / f"{key}.{name}.npy", allow_pickle=False)
                for name in index["arrays"]
            }
        except (OSError, ValueError, KeyError):
            return None
        if any(arrays[name].shape != tuple(shape) for name, shape in index["arrays"].items()):
            return None  # an array from another write of this key
        self.column_hits += 1
        return arrays, index["problems"]

    def put_column(self, key: str, arrays: dict[str, np.ndarray], problems: list[dict]) -> None:
        """Store a column's encoded arrays (skipped past `COLUMN_BYTES_KEPT`): each array
        first, the index naming them last, so a reader never finds an index without them."""
        if not self.enabled or sum(a.nbytes for a in arrays.values()) > COLUMN_BYTES_KEPT:
            return
        folder = self.root / "columns"
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            save_array(folder / f"{key}.{name}.npy", array)
        index = {
            "arrays": {name: list(a.shape) for name, a in arrays.items()},
            "problems": problems,
        }
        write_atomically(
            folder / f"{key}.json", lambda handle: handle.write(json.dumps(index).encode())
        )
        self._prune_columns(folder)

    def _prune_columns(self, folder: Path) -> None:
        """Keep the most recently written encoded columns that fit in `COLUMN_BYTES_KEPT`
        together: they copy what the blocks hold, padded, and a large table prepared in
        chunks writes one per chunk, so their number says little about the room they take."""
        total = 0
        newest_first = sorted(folder.glob("*.json"), key=written, reverse=True)
        for position, index in enumerate(newest_first):
            key = index.name.removesuffix(".json")
            arrays = list(folder.glob(f"{key}.*.npy"))
            total += sum(array.stat().st_size for array in arrays if array.exists())
            if position > 0 and total > COLUMN_BYTES_KEPT:  # the newest always stays
                index.unlink(missing_ok=True)
                for array in arrays:
                    array.unlink(missing_ok=True)


def written(path: Path) -> int:
    """When `path` was last written (ns), for keeping the newest; 0 if it is gone."""
    try:
        return path.stat().st_mtime_ns
    except OSError:  # removed meanwhile by another process
        return 0


def write_atomically(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """`write` into a temporary name beside `path`, then renamed: a reader (another process)
    meets the old file or the new one, never half of one, and a crash leaves no half entry.
    Strings pass through without pathlib: a cold run writes thousands of per-file entries."""
    partial = f"{os.fspath(path)}.{os.getpid()}.tmp"
    with open(partial, "wb") as handle:
        write(handle)
    os.replace(partial, path)


def save_array(path: str | Path, array: np.ndarray) -> None:
    write_atomically(path, lambda handle: np.save(handle, array, allow_pickle=False))


def file_stamps(paths: Sequence[str | Path]) -> np.ndarray:
    """[files, 4] int64: size, modification and change times, inode; -1 for a missing file.
    (Reading them in two threads was slower: each call holds the GIL for most of its time.)"""
    rows = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            rows.append((-1, -1, -1, -1))
            continue
        rows.append((stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def split_block(
    data: np.ndarray, offsets: np.ndarray, shapes: np.ndarray, ndims: np.ndarray, errors: np.ndarray
) -> list[np.ndarray | str]:
    """A block's flat data back into each file's array (views), or its error text."""
    if len(ndims) and ndims[0] >= 0 and (ndims == ndims[0]).all() and (shapes == shapes[0]).all():
        # every file has one shape: the files are rows of one view
        return list(data.reshape(len(ndims), *shapes[0, : ndims[0]]))
    bounds = offsets.tolist()  # Python ints: no numpy scalar per file
    out: list[np.ndarray | str] = []
    for start, end, ndim, shape, error in zip(
        bounds[:-1], bounds[1:], ndims.tolist(), shapes.tolist(), errors.tolist(), strict=True
    ):
        out.append(error if ndim < 0 else data[start:end].reshape(shape[:ndim]))
    return out
