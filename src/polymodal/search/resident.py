"""Every row of an index in memory: ids, vectors and metadata, for search.

LanceDB stores the rows, but a LanceDB query costs 5-15 ms on a 2-core AVX2 machine even to
fetch ten rows by id, and its exact search over 100,000 × 256 vectors took 70-85 ms where
numpy takes 12 (`benchmarks/vector_index.py`). So `Index` reads the table once per process
(4 × dim bytes a row, plus the metadata) and ranks in memory: every row (exact search) or the
approximate index's candidates; `add` and `delete` keep it in step with the table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

QUERY_BLOCK = 64  # queries scored together in exact search (one matrix product)


class Resident:
    """Ids (ascending), vectors (float32, unit length for cosine) and metadata (Arrow)."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, metadata: pa.Table) -> None:
        self.ids = ids
        self.vectors = vectors
        self.metadata = metadata
        self.squared = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)  # for l2

    @classmethod
    def read(cls, table: pa.Table) -> Resident:
        """From the stored table (id, vector, metadata columns), sorted by id."""
        ids = table["id"].to_numpy()
        if np.any(np.diff(ids) <= 0):  # rows come back in the order written, so rarely
            table = table.sort_by("id")
            ids = table["id"].to_numpy()
        return cls(ids, stored_vectors(table["vector"]), table.drop_columns(["id", "vector"]))

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, rows: pa.Table, vectors: np.ndarray) -> None:
        """Rows just stored (ids above every held one), with their checked vectors."""
        self.ids = np.concatenate([self.ids, rows["id"].to_numpy()])
        self.vectors = np.concatenate([self.vectors, vectors])
        squared = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
        self.squared = np.concatenate([self.squared, squared])
        new = rows.drop_columns(["id", "vector"])
        self.metadata = pa.concat_tables([self.metadata, new], promote_options="default")

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self.ids, ids)
        self.ids, self.vectors, self.squared = (
            self.ids[keep],
            self.vectors[keep],
            self.squared[keep],
        )
        self.metadata = self.metadata.filter(pa.array(keep))

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Where the held rows among `ids` are (ids not held, or -1, are left out)."""
        ids = ids[ids >= 0]
        if len(self) == 0:
            return ids[:0]
        positions = np.minimum(np.searchsorted(self.ids, ids), len(self) - 1)
        return positions[self.ids[positions] == ids]

    def nearest(
        self, queries: np.ndarray, k: int, metric: str, among: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each query, the positions of its `k` nearest rows (all rows, or the positions
        `among`), best first, and their scores: cosine or inner product (higher better) or
        Euclidean distance (lower better)."""
        vectors = self.vectors if among is None else self.vectors[among]  # gathered once
        squared = self.squared if among is None else self.squared[among]
        found = []
        for start in range(0, len(queries), QUERY_BLOCK):
            block = queries[start : start + QUERY_BLOCK]
            for scores in block_scores(block, vectors, squared, metric):
                found.append(top_k(scores, k, metric, among))
        return found

    def frame(self, positions: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
        """The hits as `Index.search` returns them: id, score, then the metadata."""
        hits = pa.table({"id": self.ids[positions], "score": pa.array(scores, pa.float64())})
        metadata = self.metadata.take(pa.array(positions, pa.int64()))
        for name in metadata.column_names:  # (a table without columns keeps no row count)
            hits = hits.append_column(name, metadata[name])
        return hits.to_pandas()


def block_scores(
    queries: np.ndarray, vectors: np.ndarray, squared: np.ndarray, metric: str
) -> np.ndarray:
    """[q, rows] scores of the queries against `vectors` (whose squared norms are `squared`)."""
    dots = (queries @ vectors.T).astype(np.float64)
    if metric != "l2":
        return dots
    query_squared = np.einsum("ij,ij->i", queries, queries, dtype=np.float64)[:, None]
    return np.sqrt(np.maximum(squared[None, :] - 2.0 * dots + query_squared, 0.0))


def top_k(
    scores: np.ndarray, k: int, metric: str, among: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The best `k` of one query's scores, best first: their positions and scores."""
    cost = scores if metric == "l2" else -scores
    k = min(k, len(cost))
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    top = np.argpartition(cost, k - 1)[:k]
    top = top[np.argsort(cost[top], kind="stable")]
    return (top if among is None else among[top]), scores[top]


def stored_vectors(vectors: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A stored vector column as a [n, dim] float32 array (already unit length for cosine:
    `Index.add` normalises them)."""
    if isinstance(vectors, pa.ChunkedArray):
        vectors = vectors.combine_chunks()
    dim = vectors.type.list_size
    values = vectors.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values.astype(np.float32, copy=False).reshape(-1, dim))
