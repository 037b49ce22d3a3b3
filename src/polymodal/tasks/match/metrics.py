"""Retrieval metrics for matched embeddings (numpy only).

Queries are ranked against items by cosine similarity (rows L2-normalised). Two levels:

* **instance** (no keys): query ``i``'s only positive is item ``i``; queries and items are the
  same rows of two columns, so their counts must be equal;
* **class** (keys given): the positives of a query are all items whose key (label) equals the
  query's key.

Ties in similarity are broken by item order (a stable sort), so results do not depend on how
the queries are chunked. Queries without any positive are left out of every metric and counted
in ``queries_without_positive``.

Returned keys: ``recall@k`` (share of queries with at least one positive among the top ``k``),
``precision@1`` (share of queries whose top item is a positive; by these definitions it equals
``recall@1`` at both levels, and is kept under the name retrieval papers report),
``median_rank`` (median 1-based rank of the first positive), ``mAP`` (mean over queries of
average precision: the mean, over a query's positives, of the precision at each positive's
rank), and ``queries_without_positive``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["both_directions", "retrieval_metrics"]

CHUNK = 1024


def _normalise(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def _check(
    queries: np.ndarray,
    items: np.ndarray,
    query_keys: np.ndarray | None,
    item_keys: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes; return the keys (row indices at instance level)."""
    if queries.ndim != 2 or items.ndim != 2 or queries.shape[1] != items.shape[1]:
        raise ValueError(
            f"queries and items must be [n, d] and [m, d], got {queries.shape} and {items.shape}"
        )
    if len(queries) == 0 or len(items) == 0:
        raise ValueError("need at least one query and one item")
    if (query_keys is None) != (item_keys is None):
        raise ValueError("give both query_keys and item_keys (class level) or neither (instance)")
    if query_keys is None or item_keys is None:
        if len(queries) != len(items):
            raise ValueError(
                f"instance level needs as many queries as items, got {len(queries)} and {len(items)}"
            )
        return np.arange(len(queries)), np.arange(len(items))
    query_keys, item_keys = np.asarray(query_keys), np.asarray(item_keys)
    if len(query_keys) != len(queries) or len(item_keys) != len(items):
        raise ValueError("need one key per query and one key per item")
    return query_keys, item_keys


def _chunk_ranks(
    queries: np.ndarray, items: np.ndarray, query_keys: np.ndarray, item_keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each query of one chunk: 1-based rank of its first positive and its average
    precision (both NaN without any positive)."""
    similarity = queries @ items.T
    order = np.argsort(-similarity, axis=1, kind="stable")
    hits = query_keys[:, None] == item_keys[order]  # [chunk, items], in ranked order
    counts = hits.sum(axis=1)
    found = counts > 0
    ranks = np.arange(1, items.shape[0] + 1)
    first = np.where(found, hits.argmax(axis=1) + 1, np.nan)
    precision = np.cumsum(hits, axis=1) / ranks
    ap = np.where(found, (precision * hits).sum(axis=1) / np.maximum(counts, 1), np.nan)
    return first, ap


def retrieval_metrics(
    queries: np.ndarray,
    items: np.ndarray,
    query_keys: np.ndarray | None = None,
    item_keys: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = CHUNK,
) -> dict[str, float]:
    """Retrieval of ``items`` [m, d] by ``queries`` [n, d]; see the module docstring for the
    levels and metrics. The similarity matrix is built ``chunk_size`` queries at a time, so
    memory is ``chunk_size × m`` rather than ``n × m``."""
    queries, items = _normalise(queries), _normalise(items)
    query_keys, item_keys = _check(queries, items, query_keys, item_keys)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    firsts, aps = [], []
    for start in range(0, len(queries), chunk_size):
        stop = start + chunk_size
        first, ap = _chunk_ranks(queries[start:stop], items, query_keys[start:stop], item_keys)
        firsts.append(first)
        aps.append(ap)
    first, ap = np.concatenate(firsts), np.concatenate(aps)
    scored = ~np.isnan(first)
    first, ap = first[scored], ap[scored]

    def share(hit: np.ndarray) -> float:
        return float(hit.mean()) if scored.any() else float("nan")

    metrics = {f"recall@{k}": share(first <= k) for k in ks}
    metrics["precision@1"] = share(first == 1)
    metrics["median_rank"] = float(np.median(first)) if scored.any() else float("nan")
    metrics["mAP"] = share(ap)
    metrics["queries_without_positive"] = float((~scored).sum())
    return metrics


def both_directions(
    a: np.ndarray,
    b: np.ndarray,
    keys: np.ndarray | None = None,
    names: tuple[str, str] = ("a", "b"),
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = CHUNK,
) -> dict[str, float]:
    """:func:`retrieval_metrics` a→b and b→a for paired rows of two columns, keys prefixed with
    the direction (``"image→audio/recall@1"``). ``keys`` (one per row, shared by both columns)
    selects class level; without them it is instance level."""
    first, second = names
    metrics: dict[str, float] = {}
    for (x, y), (qs, its) in (((first, second), (a, b)), ((second, first), (b, a))):
        for name, value in retrieval_metrics(qs, its, keys, keys, ks, chunk_size).items():
            metrics[f"{x}→{y}/{name}"] = value
    return metrics
