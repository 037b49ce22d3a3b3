"""Approximate search for an index past `ann_threshold` rows: FAISS finds candidates, the
full vectors held in memory rank them.

Why FAISS for this part, while LanceDB stays the store of record (rows, metadata, filters):
on one thread of a 2-core AMD EPYC, on 100,000 isotropic Gaussian 256-d vectors (the worst
case: no structure for a graph or for cells to use), this index found the exact top 10 (recall
1.000) at a median of 2.0 ms, built in 2.7 s; LanceDB's IVF_HNSW_SQ reached 0.91 at 7.9 ms
(ef 1600, built in 79 s) and usearch's HNSW 0.98 at 9.1 ms (ef 2048, built in 47 s on both
cores; BENCHMARKS.md, vector index, second round). On 1,000,000 vectors this index kept 0.995
at 8.7 ms (Gaussian) and 0.990 at 8.2 ms (real image embeddings). Every cell is probed by
default (`probes` 1), because random vectors need it; where vectors cluster, as real
embeddings do, a tenth of the cells kept the same recall at 2.7 ms.

The candidates are ranked on the full vectors that `resident.py` holds in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

try:
    import faiss
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("polymodal.search needs FAISS: pip install faiss-cpu") from error

FILE = "ann.faiss"
MIN_ROWS = 1_000  # fewer rows are always compared exactly: too few to fit cells and codebooks
# Rows whose codes score best, re-ranked on the full vectors (at least 4 × k). Measured at 1M
# rows, all cells probed, FAISS alone: 300 gave recall@10 0.88 on isotropic Gaussian vectors
# and on real image embeddings (many near-duplicates), 1,000 gave 0.97 on both for about
# 0.8 ms more, 3,000 0.995-0.998 for 2 ms more.
CANDIDATES = 2_000
SAMPLE_PER_CELL = 100  # training rows per cell (k-means wants at least 39)
MIN_SAMPLE = 10_000  # and at least this many, for the product quantiser's codebooks


class Approximate:
    """FAISS's IVF index of 4-bit product codes (one sub-quantiser per 2 dimensions), keyed
    by the rows' ids, saved in `ann.faiss` after every change."""

    def __init__(self, index: faiss.Index, path: Path) -> None:
        """Use `train` or `load`."""
        self.index = index
        self.path = path

    @classmethod
    def train(cls, path: Path, vectors: np.ndarray, ids: np.ndarray, metric: str) -> Approximate:
        """Cells (k-means, about sqrt(rows) of them) and codebooks fitted to a sample of
        `vectors`, then every row added and the file written."""
        cells = max(1, min(int(np.sqrt(len(vectors))), len(vectors) // 39))
        dim = vectors.shape[1]
        spec = f"IVF{cells},PQ{dim // 2 if dim % 2 == 0 else dim}x4fs"
        measure = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        index = faiss.index_factory(dim, spec, measure)
        # Codes of each vector's offset from its cell's centre, not of the vector: finer where
        # vectors crowd together (1M real image embeddings, 1,000 candidates: recall@10 0.97
        # against 0.73 without), at one look-up table per probed cell instead of one per query.
        index.by_residual = True
        size = min(len(vectors), max(SAMPLE_PER_CELL * cells, MIN_SAMPLE))
        sample = np.sort(np.random.default_rng(0).permutation(len(vectors))[:size])
        index.train(vectors[sample])
        approximate = cls(index, path)
        approximate.add(ids, vectors)
        return approximate

    @classmethod
    def load(cls, path: Path) -> Approximate:
        return cls(faiss.read_index(str(path)), path)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_with_ids(vectors, ids.astype(np.int64))
        self.save()

    def remove(self, ids: np.ndarray) -> None:
        self.index.remove_ids(faiss.IDSelectorBatch(ids.astype(np.int64)))
        self.save()

    def save(self) -> None:
        """Write the file atomically: a crash leaves the old one or the new one."""
        partial = self.path.with_suffix(f".{os.getpid()}.tmp")
        faiss.write_index(self.index, str(partial))
        os.replace(partial, self.path)

    def candidates(
        self, queries: np.ndarray, count: int, probes: float, allowed: np.ndarray | None
    ) -> np.ndarray:
        """[q, count] ids whose codes are nearest each query, -1 where fewer exist; only
        `allowed` ids when given (a metadata filter)."""
        cells = self.index.nlist
        settings = {"nprobe": max(1, min(cells, round(probes * cells)))}
        if allowed is not None:
            selector = faiss.IDSelectorBatch(allowed.astype(np.int64))  # alive until the end
            settings["sel"] = selector
        _, found = self.index.search(queries, count, params=faiss.SearchParametersIVF(**settings))
        return found
