"""Reading tables: CSV, Parquet, JSONL. File paths in cells are relative to the table's folder."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.parquet as pq

from polymodal.data.problems import BadInputError

SPLIT_COLUMN = "split"


@dataclass
class Table:
    """A data frame and the folder its relative file paths start from; `first_row` is the
    file's row number of the frame's first row (a chunk read from the middle of a file)."""

    frame: pd.DataFrame
    base_dir: Path
    name: str = "<table>"
    first_row: int = 0

    def __len__(self) -> int:
        return len(self.frame)

    def subset(self, rows: np.ndarray) -> Table:
        return Table(self.frame.iloc[rows].reset_index(drop=True), self.base_dir, self.name)

    def chunk(self, start: int, stop: int) -> Table:
        """Rows `start` to `stop` (exclusive), still numbered as in the whole table."""
        frame = self.frame.iloc[start:stop].reset_index(drop=True)
        return Table(frame, self.base_dir, self.name, self.first_row + start)


def read_table(
    source: str | Path | pd.DataFrame | Table, base_dir: str | Path | None = None
) -> Table:
    """Load a whole table from a path (by extension) or wrap a data frame."""
    if isinstance(source, Table):
        return source
    if isinstance(source, pd.DataFrame):
        return Table(source.reset_index(drop=True), Path(base_dir or ".").resolve())
    return next(read_tables(source, None, base_dir))


def read_tables(
    path: str | Path, chunk_rows: int | None = None, base_dir: str | Path | None = None
) -> Iterator[Table]:
    """The table at `path` in chunks of `chunk_rows` rows (None: one Table of every row).

    Training reads whole tables; `predict` streams tables larger than memory. Both read
    through here, so a file reads the same either way.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"table {path} does not exist")
    folder = Path(base_dir or path.parent).resolve()
    first_row = 0
    try:
        for frame in _read_frames(path, chunk_rows):
            if frame.empty:
                continue
            frame.columns = [str(column).strip() for column in frame.columns]
            yield Table(frame.reset_index(drop=True), folder, str(path), first_row)
            first_row += len(frame)
    except BadInputError:
        raise
    except (ValueError, OSError, pd.errors.ParserError, pyarrow.ArrowException) as error:
        raise BadInputError(f"cannot read table {path}: {error}") from None
    if first_row == 0:
        raise BadInputError(f"table {path} has no rows")


def _read_frames(path: Path, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    """Frames of at most `chunk_rows` rows (None: one frame), chosen by the file's suffix."""
    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith((".parquet", ".pq")):
        if chunk_rows is None:
            yield pd.read_parquet(path)
            return
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
    elif suffix.endswith((".jsonl", ".ndjson")):
        if chunk_rows is None:
            yield pd.read_json(path, lines=True)
            return
        with pd.read_json(path, lines=True, chunksize=chunk_rows) as reader:
            yield from reader
    elif suffix.endswith(".json"):  # one JSON document: read whole, then sliced
        frame = pd.read_json(path)
        step = chunk_rows or max(len(frame), 1)
        for start in range(0, len(frame), step):
            yield frame.iloc[start : start + step]
    else:
        yield from _read_csv(path, "\t" if suffix.endswith(".tsv") else ",", chunk_rows)


def _read_csv(path: Path, sep: str, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    """Read a CSV as UTF-8; undecodable bytes become U+FFFD so one bad cell can be reported."""
    try:
        if chunk_rows is None:
            yield pd.read_csv(path, sep=sep, encoding="utf-8", encoding_errors="replace")
            return
        with pd.read_csv(
            path, sep=sep, encoding="utf-8", encoding_errors="replace", chunksize=chunk_rows
        ) as reader:
            yield from reader
    except pd.errors.EmptyDataError:
        raise BadInputError(f"table {path} is empty") from None


def split_rows(
    table: Table, valid_fraction: float, seed: int, together: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Row indices per split: a `split` column wins; otherwise a seeded validation split.

    Rows that share a value in a `together` column (the file columns: one recording paired
    with several images, say) fall on the same side of a split made here. Otherwise the model
    is validated on files it trained on, and the validation score flatters it: on AV-MNIST,
    where each recording is reused about three times, 0.99 validation against 0.90 test.
    """
    frame = table.frame
    groups = shared_value_groups(frame, together)
    if SPLIT_COLUMN in frame.columns:
        names = frame[SPLIT_COLUMN].astype(str).str.strip().str.lower()
        names = names.replace({"val": "valid", "validation": "valid", "dev": "valid"})
        unknown = sorted(set(names) - {"train", "valid", "test"})
        if unknown:
            raise BadInputError(
                f"{table.name}: column 'split' holds {unknown}; use train, valid or test"
            )
        splits = {
            name: np.flatnonzero(names.to_numpy() == name) for name in ("train", "valid", "test")
        }
        if len(splits["valid"]) == 0:
            splits["train"], splits["valid"] = _random_split(
                splits["train"], valid_fraction, seed, groups
            )
        return splits
    train, valid = _random_split(np.arange(len(frame)), valid_fraction, seed, groups)
    return {"train": train, "valid": valid, "test": np.array([], dtype=int)}


def shared_value_groups(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """A group id per row; rows linked by an equal non-empty value in any of `columns`, directly
    or through other rows, share one (the connected components, by union-find). The id is the
    component's first row, so it does not depend on the order of `columns`."""
    parent = np.arange(len(frame))

    def root(row: int) -> int:
        while parent[row] != row:
            parent[row] = parent[parent[row]]
            row = parent[row]
        return row

    for column in columns:
        first_row: dict[str, int] = {}
        for row, value in enumerate(frame[column].tolist()):
            if isinstance(value, str) and value.strip():
                other = first_row.setdefault(value.strip(), row)
                parent[root(row)] = root(other)
    roots = np.array([root(row) for row in range(len(frame))], dtype=int)
    first = np.full(len(frame), len(frame))
    np.minimum.at(first, roots, np.arange(len(frame)))
    return first[roots]


def _random_split(
    rows: np.ndarray, fraction: float, seed: int, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """About `fraction` of `rows` for validation, whole groups at a time, seeded."""
    if len(rows) <= 1:
        return np.sort(rows), np.array([], dtype=int)
    n_valid = max(1, int(round(len(rows) * fraction)))
    rng = np.random.default_rng(seed)
    row_groups = groups[rows]
    order = rng.permutation(np.unique(row_groups))
    sizes = pd.Series(row_groups).value_counts().reindex(order).to_numpy()
    taken = order[: int(np.searchsorted(np.cumsum(sizes), n_valid)) + 1]
    is_valid = np.isin(row_groups, taken)
    if is_valid.all():  # one group holds (nearly) every row: split rows, not groups
        is_valid = np.isin(rows, rng.permutation(rows)[:n_valid])
    return np.sort(rows[~is_valid]), np.sort(rows[is_valid])
