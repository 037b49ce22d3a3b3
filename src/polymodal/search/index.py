"""A folder on disk that holds vectors with their metadata and finds the nearest ones.

The vectors live in one LanceDB table (embedded, no server: the folder is the database), the
settings beside it in `index.json`. Search is exact (every row compared) while the table is
small, because then it is fast enough and needs no index that could miss anything; past
`ann_threshold` rows an approximate index is built once and kept. Rows added later are
searched exactly beside the index (LanceDB scans unindexed rows), and deleted rows are masked
out, so neither adding nor deleting ever rebuilds it; `Index.optimize()` folds new rows into
it and compacts the files.

The approximate index is IVF_HNSW_SQ (a graph over 8-bit scalar-quantised vectors) whose
candidates are re-ranked on the full vectors (`ANN_REFINE`). Measured on 20k-50k vectors of
dim 128-256 on one thread (`benchmarks/vector_index.py`), it found the exact top-10 of
clustered vectors (recall@10 0.99-1.0) in 3-6 ms, and with `ANN_EF` 400 reached 0.91 on
isotropic Gaussian noise, the worst case (0.53 at ef 100; at 200k Gaussian vectors only 0.37,
while 200k clustered ones stayed at 1.0: BENCHMARKS.md). IVF_PQ and IVF_RQ stayed below 0.7
recall on the clustered vectors even re-ranking 10 × k candidates; IVF_SQ was exact at that
size only because it probed every partition, and its cost per probe grows with the table.

One writer at a time: ids are handed out from `index.json`, which two writers would race on.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePath
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

try:
    import lancedb
    from lancedb.index import HnswSq
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("polymodal.search needs LanceDB: pip install lancedb") from error

from polymodal.config import Strict

SETTINGS_FILE = "index.json"
TABLE = "vectors"
FORMAT_VERSION = 1
RESERVED = ("id", "vector", "score")  # metadata may not use these, nor names starting "_"
ANN_EF = 400  # graph candidates per query (at least 4 × those re-ranked); more: better recall
ANN_REFINE = 2  # re-rank k × this candidates on the full vectors
ID_CHUNK = 10_000  # ids per delete statement, to keep the SQL short
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
    next_id: int = Field(0, ge=0, description="the next id to hand out; ids are never reused")


class Index:
    """Vectors with metadata in a folder; `create` or `open` one, then add, delete, search."""

    def __init__(self, folder: Path, settings: IndexSettings) -> None:
        """Use `Index.create` or `Index.open`; this only wires up what they checked."""
        self.folder = folder
        self.settings = settings
        self._db = lancedb.connect(str(folder))
        self._has_ann = False
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
        return 0 if self._table is None else self._table.count_rows()

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
        if not self._has_ann and self._table is not None:  # once built, it stays
            self._has_ann = any(c.columns == ["vector"] for c in self._table.list_indices())
        return self._has_ann

    @property
    def unindexed_rows(self) -> int:
        """Rows the approximate index does not cover yet: searched exhaustively beside it
        until `optimize` folds them in. Every row while there is no approximate index."""
        configs = self._table.list_indices() if self._table is not None else []
        for config in configs:
            if config.columns == ["vector"]:
                return config.num_unindexed_rows or 0
        return len(self)

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
        if self._table is None:
            self._table = self._db.create_table(TABLE, rows)
            return ids
        if new_columns:
            self._table.add_columns(new_columns)
        self._table.add(rows)
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
        (rows matching both); returns how many went. Rows are masked, nothing is rebuilt."""
        if ids is None and where is None:
            raise ValueError("delete needs ids, a where filter, or both")
        if self._table is None:
            return 0
        before = len(self)
        if ids is None:
            self._table.delete(where)
            return before - len(self)
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        for start in range(0, len(ids), ID_CHUNK):
            listed = ", ".join(str(i) for i in ids[start : start + ID_CHUNK])
            condition = f"id IN ({listed})"
            self._table.delete(condition if where is None else f"({condition}) AND ({where})")
        return before - len(self)

    def optimize(self) -> None:
        """Build the approximate index once the table reaches `ann_threshold` rows, then
        compact the files and fold rows added since into the index (no retraining)."""
        if self._table is None:
            return
        if not self.has_ann and len(self) >= self.settings.ann_threshold:
            self._build_ann()
        self._table.optimize()

    def _build_ann(self) -> None:
        self._table.create_index(
            "vector", config=HnswSq(distance_type=self.settings.metric), replace=True
        )

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
        True or False forces one or the other.
        """
        queries = self._checked(queries, "queries")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if self._table is None or len(queries) == 0:
            empty = pd.DataFrame({"id": pd.Series(dtype=np.int64), "score": pd.Series(dtype=float)})
            return [empty.copy() for _ in range(len(queries))]
        if exact is None:
            exact = len(self) < self.settings.ann_threshold
        if not exact and not self.has_ann:
            self._build_ann()
        return self._query(queries, k, where, exact)

    def rows(self, ids: np.ndarray | list[int]) -> pd.DataFrame:
        """The stored rows with these ids (id, then the metadata; no vectors), by id; ids
        the index does not hold (never given, or deleted) are left out."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        metadata = self.metadata_columns
        if self._table is None or len(ids) == 0:
            return pd.DataFrame({"id": pd.Series(dtype=np.int64)})
        frames = []
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start : start + ID_CHUNK]
            listed = ", ".join(str(i) for i in chunk)
            query = self._table.search().where(f"id IN ({listed})").select(["id", *metadata])
            frames.append(query.limit(len(chunk)).to_pandas())
        return pd.concat(frames).sort_values("id").reset_index(drop=True)

    def _query(
        self, queries: np.ndarray, k: int, where: str | None, exact: bool
    ) -> list[pd.DataFrame]:
        metadata = self.metadata_columns
        target = list(queries) if len(queries) > 1 else queries[0]
        query = self._table.search(target, vector_column_name="vector")
        query = query.distance_type(self.settings.metric).limit(k)
        query = query.select(["id", "_distance", *metadata])
        if where is not None:
            query = query.where(where, prefilter=True)
        if exact:
            query = query.bypass_vector_index()
        else:
            query = query.ef(max(ANN_EF, 4 * k * ANN_REFINE)).refine_factor(ANN_REFINE)
            query = query.maximum_nprobes(0)  # a narrow filter may probe more partitions
        found = query.to_arrow()
        distance = found["_distance"].to_numpy().astype(np.float64)
        number = np.zeros(len(found), dtype=np.int64)
        if "query_index" in found.column_names:  # LanceDB tags rows only for several queries
            number = found["query_index"].to_numpy()
        order = np.lexsort((distance, number))  # by query, then best first
        frame = found.select(["id", *metadata]).take(order).to_pandas()
        frame.insert(1, "score", self._score(distance[order]))
        bounds = np.searchsorted(number[order], np.arange(len(queries) + 1))
        return [
            frame.iloc[a:b].reset_index(drop=True)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]

    def _score(self, distance: np.ndarray) -> np.ndarray:
        """LanceDB's distance as the score the caller asked for."""
        if self.settings.metric == "l2":  # LanceDB gives the squared distance
            return np.sqrt(np.maximum(distance, 0.0))
        return 1.0 - distance  # LanceDB gives 1 - similarity for both cosine and dot

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
