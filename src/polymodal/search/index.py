"""A folder on disk that holds vectors with their metadata and finds the nearest ones.

The vectors live in one LanceDB table (embedded, no server: the folder is the database), the
settings beside it in `index.json`; LanceDB evaluates metadata filters. A process that
searches holds the rows in memory (`resident.py`, which says why) and ranks there. Search is
exact (every row compared) while the table is small, because then it is fast enough and needs
no index that could miss anything; past `ann_threshold` rows an approximate index is built
once and kept. Neither adding nor deleting rows rebuilds it; `Index.optimize()` compacts the
table's files.

The approximate index is FAISS's (`approximate.py`, which says why not LanceDB's own): built
once from the table, it takes rows as they are added and drops them as they are deleted, so
it always covers every row; its file `ann.faiss` lies beside the table.

One writer at a time: ids are handed out from `index.json`, which two writers would race on.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

try:
    import lancedb
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("polymodal.search needs LanceDB: pip install lancedb") from error

from polymodal.config import Strict
from polymodal.search.approximate import CANDIDATES, FILE, MIN_ROWS, Approximate
from polymodal.search.resident import Resident

SETTINGS_FILE = "index.json"
TABLE = "vectors"
FORMAT_VERSION = 1
RESERVED = ("id", "vector", "score")  # metadata may not use these, nor names starting "_"
ID_CHUNK = 10_000  # ids per SQL condition, to keep the statements short
# Miniblock pages read a scan of fixed-size vectors ~3× faster than LanceDB's default
# layout for large values (measured: 50k × 256 exact search, 17 ms against 50 ms).
VECTOR_FIELD_METADATA = {"lance-encoding:structural-encoding": "miniblock"}

Metric = Literal["cosine", "dot", "l2"]


class IndexSettings(Strict):
    """What `index.json` holds: enough to reopen the index and to refuse wrong vectors."""

    version: int = FORMAT_VERSION
    dim: int = Field(gt=0, description="length of every vector")
    metric: Metric = Field(
        "cosine", description="cosine: similarity of unit vectors; dot: inner product; l2"
    )
    ann_threshold: int = Field(
        100_000, ge=1, description="rows from which search uses the approximate index"
    )
    ann_probes: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of the approximate index's cells a query probes: 1 compares every "
        "row's codes (recall on any data); less is faster where the vectors form clusters",
    )
    next_id: int = Field(0, ge=0, description="the next id to hand out; ids are never reused")


class Index:
    """Vectors with metadata in a folder; `create` or `open` one, then add, delete, search."""

    def __init__(self, folder: Path, settings: IndexSettings) -> None:
        """Use `Index.create` or `Index.open`; this only wires up what they checked."""
        self.folder = folder
        self.settings = settings
        self._db = lancedb.connect(str(folder))
        self._approximate: Approximate | None = None  # read on first use
        self._resident: Resident | None = None  # read on first approximate search
        self._rows: int | None = None  # the table's row count, once counted
        try:
            self._table = self._db.open_table(TABLE)
        except ValueError:  # nothing added yet: the table's columns come with the first rows
            self._table = None

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(
        cls,
        folder: str | Path,
        dim: int,
        metric: Metric = "cosine",
        ann_threshold: int = 100_000,
        overwrite: bool = False,
    ) -> Index:
        """A new, empty index. An existing non-empty folder is refused unless `overwrite`,
        and even then only when it is an index: a folder of anything else is never deleted."""
        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()):
            if not overwrite:
                raise FileExistsError(
                    f"{folder} already exists and is not empty; pass overwrite=True to replace "
                    "the index there, or choose another folder"
                )
            if not (folder / SETTINGS_FILE).is_file():
                raise FileExistsError(
                    f"{folder} is not empty and is not a vector index (no {SETTINGS_FILE}); "
                    "refusing to delete it"
                )
            shutil.rmtree(folder)
        settings = IndexSettings(dim=dim, metric=metric, ann_threshold=ann_threshold)
        folder.mkdir(parents=True, exist_ok=True)
        write_settings(folder, settings)
        return cls(folder, settings)

    @classmethod
    def open(cls, folder: str | Path) -> Index:
        """The index saved in `folder`."""
        folder = Path(folder)
        path = folder / SETTINGS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} is not a vector index: {SETTINGS_FILE} is missing "
                "(make one with Index.create)"
            )
        settings = IndexSettings.model_validate_json(path.read_text())
        if settings.version > FORMAT_VERSION:
            raise ValueError(
                f"{path} has format version {settings.version}; this polymodal reads up to "
                f"{FORMAT_VERSION}: upgrade polymodal"
            )
        return cls(folder, settings)

    def __len__(self) -> int:
        if self._rows is None:  # counted once after each write: a LanceDB call costs ms
            self._rows = 0 if self._table is None else self._table.count_rows()
        return self._rows

    def __repr__(self) -> str:
        s = self.settings
        return f"Index({str(self.folder)!r}, rows={len(self)}, dim={s.dim}, metric={s.metric!r})"

    @property
    def metadata_columns(self) -> list[str]:
        """The metadata columns stored so far, in table order."""
        if self._table is None:
            return []
        return [name for name in self._table.schema.names if name not in ("id", "vector")]

    @property
    def has_ann(self) -> bool:
        """Whether the approximate index has been built."""
        return (self.folder / FILE).is_file()

    @property
    def unindexed_rows(self) -> int:
        """Rows the approximate index does not cover: none once it is built (rows added later
        go into it at once), every row before."""
        return 0 if self.has_ann else len(self)

    # ------------------------------------------------------------------ writing
    def add(self, vectors: np.ndarray, metadata: pd.DataFrame | None = None) -> np.ndarray:
        """Store `vectors` [n, dim] with one metadata row each; returns their new ids.

        Metadata columns (strings, numbers, paths, labels) may differ between calls: a column
        new to the index is added (empty for older rows), a missing one is left empty.
        """
        if np.ndim(vectors) != 2:
            shape = np.shape(vectors)
            raise ValueError(f"vectors must be [n, {self.settings.dim}], got shape {shape}")
        vectors = self._checked(vectors, "vectors")
        columns = metadata_table(metadata, len(vectors))
        if len(vectors) == 0:
            return np.zeros(0, dtype=np.int64)
        first = self.settings.next_id
        ids = np.arange(first, first + len(vectors), dtype=np.int64)
        vector_array = pa.FixedSizeListArray.from_arrays(
            pa.array(vectors.reshape(-1)), self.settings.dim
        )
        rows = pa.table({"id": pa.array(ids), "vector": vector_array})
        for name in columns.column_names:
            rows = rows.append_column(name, columns[name])
        rows, new_columns = self._aligned(rows)  # checked before anything is written
        # Reserve the ids before writing rows: a crash in between skips ids, never reuses them.
        self.settings = self.settings.model_copy(update={"next_id": first + len(vectors)})
        write_settings(self.folder, self.settings)
        self._rows = None
        if self._table is None:
            self._table = self._db.create_table(TABLE, rows)
            return ids
        if new_columns:
            self._table.add_columns(new_columns)
        self._table.add(rows)
        if self.has_ann:
            self._stored_approximate().add(ids, vectors)
        if self._resident is not None:
            self._resident.add(rows, vectors)
        return ids

    def _aligned(self, rows: pa.Table) -> tuple[pa.Table, list[pa.Field]]:
        """`rows` in the stored table's columns and types (a missing column empty), and the
        columns the table does not have yet."""
        if self._table is None:
            return rows.cast(storage_schema(rows.schema)), []
        stored = self._table.schema
        new = [field for field in rows.schema if field.name not in stored.names]
        schema = pa.schema([*stored, *new])
        arrays = []
        for field in schema:
            if field.name not in rows.column_names:
                arrays.append(pa.nulls(len(rows), field.type))
                continue
            try:
                arrays.append(rows[field.name].cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise ValueError(
                    f"metadata column {field.name!r} holds {rows.schema.field(field.name).type} "
                    f"but the index stores {field.type} there: {error}"
                ) from error
        return pa.Table.from_arrays(arrays, schema=schema), new

    def delete(self, ids: np.ndarray | list[int] | None = None, where: str | None = None) -> int:
        """Remove rows by id, by a SQL filter on metadata (`"split = 'test'"`), or both
        (rows matching both); returns how many went. Nothing is rebuilt."""
        if ids is None and where is None:
            raise ValueError("delete needs ids, a where filter, or both")
        if self._table is None:
            return 0
        gone = self._matching_ids(ids, where)
        self._rows = None
        for _, condition in id_conditions(gone):
            self._table.delete(condition)
        if len(gone) and self.has_ann:
            self._stored_approximate().remove(gone)
        if self._resident is not None:
            self._resident.remove(gone)
        return len(gone)

    def _matching_ids(self, ids: np.ndarray | list[int] | None, where: str | None) -> np.ndarray:
        """The stored ids among `ids` (all when None) whose rows match `where` (all when
        None), ascending."""
        if ids is None:
            query = self._table.search().where(where).select(["id"]).limit(max(1, len(self)))
            return np.sort(query.to_arrow()["id"].to_numpy())
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        found = []
        for chunk, condition in id_conditions(ids):
            condition = condition if where is None else f"({condition}) AND ({where})"
            query = self._table.search().where(condition).select(["id"]).limit(len(chunk))
            found.append(query.to_arrow()["id"].to_numpy())
        return np.sort(np.concatenate(found)) if found else ids[:0]

    def optimize(self) -> None:
        """Build the approximate index once the table reaches `ann_threshold` rows, then
        compact the table's files."""
        if self._table is None:
            return
        if not self.has_ann and len(self) >= max(self.settings.ann_threshold, MIN_ROWS):
            self._approximate_index()
        self._table.optimize()

    def _stored_approximate(self) -> Approximate:
        """The approximate index as its file holds it (which `has_ann` says exists)."""
        if self._approximate is None:
            self._approximate = Approximate.load(self.folder / FILE)
        return self._approximate

    def _approximate_index(self) -> Approximate:
        """The approximate index, built from the table when there is none or when it and the
        table disagree (as after a crash between the two writes)."""
        if self.has_ann:
            self._stored_approximate()
        if self._approximate is None or len(self._approximate) != len(self):
            resident = self._resident_rows()
            self._approximate = Approximate.train(
                self.folder / FILE, resident.vectors, resident.ids, self.settings.metric
            )
        return self._approximate

    def _resident_rows(self) -> Resident:
        if self._resident is None:
            self._resident = Resident.read(self._table.to_arrow())
        return self._resident

    # ------------------------------------------------------------------ reading
    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        where: str | None = None,
        exact: bool | None = None,
    ) -> list[pd.DataFrame]:
        """The `k` nearest rows to each query ([dim] or [q, dim]), best first: one frame per
        query with columns id, score, then the metadata.

        score is the cosine similarity (cosine) or the inner product (dot), higher better, or
        the Euclidean distance (l2), lower better. `where` filters before ranking, so k rows
        come back whenever k rows match. `exact=None` compares every row below
        `ann_threshold` rows and uses the approximate index (building it if needed) above;
        True or False forces one or the other, except that a table under `MIN_ROWS` (1,000)
        rows is always compared exactly.
        """
        queries = self._checked(queries, "queries")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if self._table is None or len(queries) == 0:
            empty = pd.DataFrame({"id": pd.Series(dtype=np.int64), "score": pd.Series(dtype=float)})
            return [empty.copy() for _ in range(len(queries))]
        if exact is None:
            exact = len(self) < self.settings.ann_threshold
        resident = self._resident_rows()
        among = None if where is None else resident.positions(self._matching_ids(None, where))
        if exact or len(self) < MIN_ROWS or (among is not None and len(among) == 0):
            found = resident.nearest(queries, k, self.settings.metric, among)
        else:
            found = self._approximate_nearest(queries, k, among)
        return [resident.frame(positions, scores) for positions, scores in found]

    def rows(self, ids: np.ndarray | list[int]) -> pd.DataFrame:
        """The stored rows with these ids (id, then the metadata; no vectors), by id; ids
        the index does not hold (never given, or deleted) are left out."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        metadata = self.metadata_columns
        if self._table is None or len(ids) == 0:
            return pd.DataFrame({"id": pd.Series(dtype=np.int64)})
        frames = []
        for chunk, condition in id_conditions(ids):
            query = self._table.search().where(condition).select(["id", *metadata])
            frames.append(query.limit(len(chunk)).to_pandas())
        return pd.concat(frames).sort_values("id").reset_index(drop=True)

    def _approximate_nearest(
        self, queries: np.ndarray, k: int, among: np.ndarray | None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Candidates from the approximate index (only rows `among`, when given), each
        query's ranked on their full vectors."""
        resident = self._resident_rows()
        allowed = None if among is None else resident.ids[among]
        candidates = self._approximate_index().candidates(
            queries, max(CANDIDATES, 4 * k), self.settings.ann_probes, allowed
        )
        return [
            resident.nearest(query[None], k, self.settings.metric, resident.positions(found))[0]
            for query, found in zip(queries, candidates, strict=True)
        ]

    def _checked(self, vectors: np.ndarray, what: str) -> np.ndarray:
        """[n, dim] float32, finite and (for cosine) of unit length; a [dim] vector is one row."""
        array = np.asarray(vectors)
        if array.dtype.kind not in "fiu":
            raise ValueError(f"{what} must be real numbers, got dtype {array.dtype}")
        dim = self.settings.dim
        if array.ndim not in (1, 2) or array.shape[-1] != dim:
            raise ValueError(f"{what} must be [{dim}] or [n, {dim}], got shape {array.shape}")
        array = np.ascontiguousarray(array, dtype=np.float32).reshape(-1, dim)
        report_bad_rows(~np.isfinite(array).all(axis=1), what, "NaN or infinite values")
        if self.settings.metric == "cosine":
            norms = np.linalg.norm(array, axis=1, keepdims=True)
            report_bad_rows(norms[:, 0] == 0, what, "only zeros (no direction for cosine)")
            array = array / norms
        return array


def id_conditions(ids: np.ndarray) -> Iterator[tuple[np.ndarray, str]]:
    """`ids` in chunks of `ID_CHUNK`, each with the SQL condition that selects its rows."""
    for start in range(0, len(ids), ID_CHUNK):
        chunk = ids[start : start + ID_CHUNK]
        yield chunk, f"id IN ({', '.join(str(i) for i in chunk)})"


def report_bad_rows(bad: np.ndarray, what: str, problem: str) -> None:
    """Raise a ValueError naming the first bad row (and how many others), if any."""
    rows = np.flatnonzero(bad)
    if len(rows):
        more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
        raise ValueError(f"{what} row {rows[0]} has {problem}{more}")


def metadata_table(metadata: pd.DataFrame | None, rows: int) -> pa.Table:
    """The metadata as Arrow columns LanceDB can store: paths become strings, categories
    their values, and an all-empty column strings."""
    if metadata is None:
        return pa.table({})
    if not isinstance(metadata, pd.DataFrame):
        raise ValueError(f"metadata must be a pandas DataFrame, got {type(metadata).__name__}")
    if len(metadata) != rows:
        raise ValueError(f"metadata has {len(metadata)} rows but there are {rows} vectors")
    for name in metadata.columns:
        if not isinstance(name, str) or name in RESERVED or name.startswith("_"):
            raise ValueError(
                f"metadata column {name!r} is not allowed: names must be strings, not start "
                f"with '_' and not be one of {list(RESERVED)}"
            )
    frame = metadata.reset_index(drop=True).copy()
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            frame[name] = column.astype(column.cat.categories.dtype)
        elif column.dtype == object and column.map(lambda v: isinstance(v, PurePath)).any():
            frame[name] = column.map(lambda v: str(v) if isinstance(v, PurePath) else v)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    fields = [
        pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def storage_schema(schema: pa.Schema) -> pa.Schema:
    """The schema the table is created with: ids and vectors required, vectors laid out
    for fast scans."""
    fields = [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("vector", schema.field("vector").type, False, VECTOR_FIELD_METADATA),
    ]
    fields += [field for field in schema if field.name not in ("id", "vector")]
    return pa.schema(fields)


def write_settings(folder: Path, settings: IndexSettings) -> None:
    """Write `index.json` atomically, so a crash never leaves half a file."""
    path = folder / SETTINGS_FILE
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(settings.model_dump_json(indent=2) + "\n")
    os.replace(partial, path)
