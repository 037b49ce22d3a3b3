"""Tests for polymodal.tasks.match.metrics (expected values worked out by hand).

Most examples use one-hot items (``np.eye``): a query's cosine similarity to item ``j`` is then
its ``j``-th component over its norm, so each query row reads directly as its ranking.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from polymodal.tasks.match import metrics as metrics_module
from polymodal.tasks.match.metrics import both_directions, retrieval_metrics

ITEMS = np.eye(4)

# instance level: query i's only positive is item i
INSTANCE_QUERIES = np.array(
    [
        [0.9, 0.1, 0.5, 0.3],  # order 0 2 3 1 -> item 0 at rank 1, AP 1
        [0.8, 0.4, 0.6, 0.2],  # order 0 2 1 3 -> item 1 at rank 3, AP 1/3
        [0.3, 0.9, 0.5, 0.1],  # order 1 2 0 3 -> item 2 at rank 2, AP 1/2
        [0.7, 0.6, 0.5, 0.4],  # order 0 1 2 3 -> item 3 at rank 4, AP 1/4
    ]
)

# class level: positives are the items with the query's key
ITEM_KEYS = np.array(["cat", "dog", "cat", "bird"])
CLASS_QUERIES = np.array(
    [
        [0.2, 0.9, 0.5, 0.7],  # cat: order dog bird cat cat -> first at 3, AP (1/3 + 2/4)/2
        [0.9, 0.8, 0.1, 0.3],  # dog: order cat dog bird cat -> first at 2, AP 1/2
        [0.6, 0.2, 0.9, 0.1],  # cat: order cat cat dog bird -> first at 1, AP (1 + 1)/2
    ]
)
CLASS_KEYS = np.array(["cat", "dog", "cat"])


def test_instance_level_hand_worked():
    got = retrieval_metrics(INSTANCE_QUERIES, ITEMS, ks=(1, 2, 3))
    assert got == pytest.approx(
        {
            "recall@1": 1 / 4,
            "recall@2": 2 / 4,
            "recall@3": 3 / 4,
            "precision@1": 1 / 4,
            "median_rank": 2.5,  # ranks 1, 3, 2, 4
            "mAP": (1 + 1 / 3 + 1 / 2 + 1 / 4) / 4,
            "queries_without_positive": 0.0,
        }
    )


def test_default_ks():
    got = retrieval_metrics(INSTANCE_QUERIES, ITEMS)
    assert {k: got[k] for k in ("recall@1", "recall@5", "recall@10")} == pytest.approx(
        {"recall@1": 0.25, "recall@5": 1.0, "recall@10": 1.0}
    )


def test_class_level_hand_worked():
    got = retrieval_metrics(CLASS_QUERIES, ITEMS, CLASS_KEYS, ITEM_KEYS, ks=(1, 2, 3))
    assert got == pytest.approx(
        {
            "recall@1": 1 / 3,
            "recall@2": 2 / 3,
            "recall@3": 1.0,
            "precision@1": 1 / 3,
            "median_rank": 2.0,  # ranks 3, 2, 1
            "mAP": ((1 / 3 + 2 / 4) / 2 + 1 / 2 + 1) / 3,
            "queries_without_positive": 0.0,
        }
    )


def test_query_without_positive_is_excluded_and_counted():
    queries = np.vstack([CLASS_QUERIES, [0.5, 0.5, 0.4, 0.1]])
    keys = np.append(CLASS_KEYS, "fish")  # no fish among the items
    got = retrieval_metrics(queries, ITEMS, keys, ITEM_KEYS, ks=(1, 2, 3))
    expected = retrieval_metrics(CLASS_QUERIES, ITEMS, CLASS_KEYS, ITEM_KEYS, ks=(1, 2, 3))
    assert got == pytest.approx({**expected, "queries_without_positive": 1.0})


def test_no_query_with_a_positive_gives_nan():
    got = retrieval_metrics(CLASS_QUERIES, ITEMS, np.array(["x", "y", "z"]), ITEM_KEYS)
    assert got["queries_without_positive"] == 3.0
    assert all(math.isnan(v) for k, v in got.items() if k != "queries_without_positive")


def test_similarity_is_cosine_not_dot_product():
    items = np.array([[10.0, 0.0], [1.0, 1.0]])
    query = np.array([[0.5, 0.6]])
    # cosine: item 1 (0.997) before item 0 (0.64); a raw dot product would rank item 0 first
    got = retrieval_metrics(query, items, np.array([1]), np.array([0, 1]), ks=(1,))
    assert got["recall@1"] == 1.0
    assert got["median_rank"] == 1.0


def test_ties_are_broken_by_item_order():
    items = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    query = np.array([[1.0, 0.0]])
    got = retrieval_metrics(query, items, np.array(["b"]), np.array(["a", "b", "c"]), ks=(1,))
    assert got["median_rank"] == 2.0
    assert got["mAP"] == pytest.approx(1 / 2)


def test_chunking_gives_the_same_result_as_one_chunk(monkeypatch):
    rng = np.random.default_rng(0)
    queries, items = rng.normal(size=(50, 8)), rng.normal(size=(30, 8))
    query_keys, item_keys = rng.integers(0, 6, size=50), rng.integers(0, 5, size=30)
    whole = retrieval_metrics(queries, items, query_keys, item_keys, chunk_size=1024)
    assert whole["queries_without_positive"] >= 1  # key 5 never occurs among the items
    seen = []
    original = metrics_module._chunk_ranks

    def spy(chunk, *args):
        seen.append(len(chunk))
        return original(chunk, *args)

    monkeypatch.setattr(metrics_module, "_chunk_ranks", spy)
    for size in (1, 7, 16):
        seen.clear()
        chunked = retrieval_metrics(queries, items, query_keys, item_keys, chunk_size=size)
        assert chunked == pytest.approx(whole, abs=1e-12)
        assert max(seen) <= size and sum(seen) == 50
    instance = retrieval_metrics(queries[:30], items)
    assert retrieval_metrics(queries[:30], items, chunk_size=4) == pytest.approx(instance)


def test_input_errors():
    with pytest.raises(ValueError, match="as many queries as items"):
        retrieval_metrics(CLASS_QUERIES, ITEMS)
    with pytest.raises(ValueError, match="both query_keys and item_keys"):
        retrieval_metrics(CLASS_QUERIES, ITEMS, CLASS_KEYS)
    with pytest.raises(ValueError, match="one key per"):
        retrieval_metrics(CLASS_QUERIES, ITEMS, CLASS_KEYS[:2], ITEM_KEYS)
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        retrieval_metrics(CLASS_QUERIES, ITEMS[:, :3], CLASS_KEYS, ITEM_KEYS)


# --------------------------------------------------------------------------- both directions


def test_both_directions_keys_and_values():
    got = both_directions(INSTANCE_QUERIES, ITEMS, names=("image", "audio"), ks=(1, 2, 3))
    names = ["recall@1", "recall@2", "recall@3", "precision@1", "median_rank", "mAP"]
    names.append("queries_without_positive")
    expected_keys = {f"{d}/{n}" for d in ("image→audio", "audio→image") for n in names}
    assert set(got) == expected_keys
    forward = retrieval_metrics(INSTANCE_QUERIES, ITEMS, ks=(1, 2, 3))
    backward = retrieval_metrics(ITEMS, INSTANCE_QUERIES, ks=(1, 2, 3))
    assert got["image→audio/recall@1"] == pytest.approx(1 / 4)  # the hand-worked value
    assert got["image→audio/mAP"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1 / 4) / 4)
    for name in names:
        assert got[f"image→audio/{name}"] == pytest.approx(forward[name])
        assert got[f"audio→image/{name}"] == pytest.approx(backward[name])
    assert forward != pytest.approx(backward)  # the two directions really differ here


def test_both_directions_with_keys_is_class_level():
    a, b = INSTANCE_QUERIES, ITEMS
    keys = np.array([0, 1, 0, 1])
    got = both_directions(a, b, keys, names=("x", "y"))
    assert got["x→y/mAP"] == pytest.approx(retrieval_metrics(a, b, keys, keys)["mAP"])
    assert got["y→x/mAP"] == pytest.approx(retrieval_metrics(b, a, keys, keys)["mAP"])
    assert got["x→y/mAP"] != pytest.approx(retrieval_metrics(a, b)["mAP"])
