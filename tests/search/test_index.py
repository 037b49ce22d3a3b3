"""The vector index against numpy brute force, on small generated data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polymodal.search import Index

DIM = 32


def gaussian(rows: int, seed: int = 0) -> np.ndarray:
    """Dot products of order 1, so scores compare to an absolute 1e-5."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, DIM)) / np.sqrt(DIM)).astype(np.float32)


def clustered(rows: int, seed: int = 0, clusters: int = 30) -> np.ndarray:
    """A mixture of Gaussians, closer to real embeddings than isotropic noise."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(1234).standard_normal((clusters, DIM))
    points = centers[rng.integers(0, clusters, rows)] + 0.6 * rng.standard_normal((rows, DIM))
    return points.astype(np.float32)


def brute_force(data: np.ndarray, queries: np.ndarray, metric: str, k: int):
    """Top-k ids and scores by numpy, in float64."""
    data, queries = data.astype(np.float64), queries.astype(np.float64)
    if metric == "cosine":
        data = data / np.linalg.norm(data, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    if metric == "l2":
        scores = np.sqrt(((queries[:, None, :] - data[None, :, :]) ** 2).sum(-1))
        order = np.argsort(scores, axis=1)[:, :k]
    else:
        scores = queries @ data.T
        order = np.argsort(-scores, axis=1)[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def splits(rows: int) -> pd.DataFrame:
    names = np.array(["train", "valid", "test"])
    return pd.DataFrame(
        {
            "split": names[np.arange(rows) % 3],
            "label": np.arange(rows) % 7,
            "path": [Path(f"images/{i}.png") for i in range(rows)],
        }
    )


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_exact_search_equals_numpy(tmp_path, metric):
    data, queries = gaussian(1500), gaussian(6, seed=1)
    index = Index.create(tmp_path / "index", DIM, metric=metric)
    ids = index.add(data)
    assert ids.tolist() == list(range(1500))
    found = index.search(queries, k=10)
    assert not index.has_ann  # below ann_threshold: every row compared, no index built
    order, scores = brute_force(data, queries, metric, 10)
    assert len(found) == 6
    for frame, want_ids, want_scores in zip(found, order, scores, strict=True):
        assert list(frame.columns[:2]) == ["id", "score"]
        assert frame["id"].tolist() == want_ids.tolist()
        np.testing.assert_allclose(frame["score"], want_scores, atol=1e-5)
    single = index.search(queries[0], k=10)
    assert len(single) == 1 and single[0]["id"].tolist() == order[0].tolist()
    stored = np.stack(index._table.to_arrow()["vector"].to_numpy(zero_copy_only=False))
    norms = np.linalg.norm(stored, axis=1)
    if metric == "cosine":  # stored as unit vectors, as written in the table
        np.testing.assert_allclose(norms, 1.0, atol=1e-6)
    else:
        np.testing.assert_allclose(norms, np.linalg.norm(data, axis=1), rtol=1e-6)


def test_deleted_rows_are_never_returned(tmp_path):
    data = gaussian(600)
    index = Index.create(tmp_path / "index", DIM)
    ids = index.add(data, splits(600))
    assert index.delete(ids=ids[:50]) == 50
    assert index.delete(where="split = 'test'") == len([i for i in range(50, 600) if i % 3 == 2])
    gone = set(ids[:50]) | {i for i in range(600) if i % 3 == 2}
    assert len(index) == 600 - len(gone)
    found = index.search(data[:60], k=len(index) + 10)  # every remaining row, per query
    for number, frame in enumerate(found):
        assert not gone & set(frame["id"]), number
        assert set(frame["id"]) == set(range(600)) - gone
    # ids keep increasing after a delete, even when the newest rows were the ones deleted
    index.delete(ids=[599, 598])
    assert index.add(gaussian(2, seed=5)).tolist() == [600, 601]


def test_where_filter_returns_only_matching_rows(tmp_path):
    data, queries = gaussian(900), gaussian(4, seed=2)
    index = Index.create(tmp_path / "index", DIM)
    index.add(data, splits(900))
    kept = np.flatnonzero(np.arange(900) % 3 == 1)
    order, _ = brute_force(data[kept], queries, "cosine", 8)
    for frame, want in zip(index.search(queries, k=8, where="split = 'valid'"), order, strict=True):
        assert (frame["split"] == "valid").all()
        assert frame["id"].tolist() == kept[want].tolist()
        assert frame["path"].iloc[0].startswith("images/")  # paths stored as text
    both = index.search(queries[0], k=50, where="split = 'train' AND label = 3")[0]
    assert len(both) == len([i for i in range(900) if i % 3 == 0 and i % 7 == 3])
    assert set(both["split"]) == {"train"} and set(both["label"]) == {3}


def test_reopened_index_gives_the_same_results(tmp_path):
    data, queries = gaussian(800), gaussian(3, seed=3)
    index = Index.create(tmp_path / "index", DIM, metric="dot", ann_threshold=5000)
    index.add(data, splits(800))
    index.delete(ids=[3, 4])
    before = index.search(queries, k=5, where="split != 'test'")
    again = Index.open(tmp_path / "index")
    assert len(again) == 798
    assert again.settings.metric == "dot" and again.settings.ann_threshold == 5000
    for old, new in zip(before, again.search(queries, k=5, where="split != 'test'"), strict=True):
        pd.testing.assert_frame_equal(old, new)
    assert again.add(gaussian(1, seed=9)).tolist() == [800]
    assert json.loads((tmp_path / "index" / "index.json").read_text())["next_id"] == 801


def test_create_refuses_an_existing_folder(tmp_path):
    folder = tmp_path / "index"
    Index.create(folder, DIM).add(gaussian(10))
    with pytest.raises(FileExistsError, match=str(folder)):
        Index.create(folder, DIM)
    assert len(Index.open(folder)) == 10  # untouched
    assert len(Index.create(folder, DIM, overwrite=True)) == 0
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"not an index")
    with pytest.raises(FileExistsError, match="not a vector index"):
        Index.create(other, DIM, overwrite=True)
    assert (other / "holiday.jpg").exists()
    with pytest.raises(FileNotFoundError, match="index.json"):
        Index.open(other)


def test_ann_recall_and_rows_added_after_the_index(tmp_path):
    data, queries = clustered(3000), clustered(40, seed=1)
    index = Index.create(tmp_path / "index", DIM, ann_threshold=500)
    index.add(data, splits(3000))
    exact = index.search(queries, k=10, exact=True)
    assert not index.has_ann and index.unindexed_rows == 3000  # exact search builds nothing
    approx = index.search(queries, k=10)  # past the threshold: builds the index
    assert index.has_ann and index.unindexed_rows == 0
    recall = np.mean(
        [len(set(a["id"]) & set(e["id"])) / 10 for a, e in zip(approx, exact, strict=True)]
    )
    assert recall >= 0.9
    # hits are ranked on the full vectors: their scores are the exact ones
    for a, e in zip(approx, exact, strict=True):
        shared = e.set_index("id").loc[a["id"]]
        assert np.allclose(a["score"], shared["score"], atol=1e-5)
        assert a["score"].is_monotonic_decreasing and list(a.columns) == list(e.columns)
        assert a.drop(columns="score").equals(shared.reset_index().drop(columns="score"))

    # Rows added now go into the approximate index at once: no rebuild needed.
    fresh = clustered(20, seed=7) + 3.0 * np.eye(DIM, dtype=np.float32)[:20]
    fresh_ids = index.add(fresh, splits(20))
    assert index.unindexed_rows == 0 and index.has_ann
    for row, frame in zip(fresh_ids, index.search(fresh, k=5), strict=True):
        assert frame["id"].iloc[0] == row

    # Filters and deletes hold in ANN mode too.
    for frame in index.search(queries, k=10, where="label = 2"):
        assert len(frame) == 10 and set(frame["label"]) == {2}
    assert index.search(queries[:1], k=3, where="label = 99")[0].empty
    assert index.delete(ids=fresh_ids[:10]) == 10
    top = [frame["id"].iloc[0] for frame in index.search(fresh[:10], k=3)]
    assert not set(top) & set(fresh_ids[:10])
    rows = len(index)
    gone = index.delete(where="split = 'valid' AND label = 4")
    assert gone > 0 and len(index) == rows - gone
    hits = pd.concat(index.search(queries, k=50))
    assert not ((hits["split"] == "valid") & (hits["label"] == 4)).any()
    index.optimize()  # compacts the table; the approximate index already holds every row
    assert [frame["id"].iloc[0] for frame in index.search(fresh[10:], k=1)] == list(fresh_ids[10:])

    # Reopened, it searches the same way; a stale file (a crash between the table's write and
    # the approximate index's) is rebuilt from the table instead of answering from old rows.
    before = index.search(queries, k=10)
    reopened = Index.open(tmp_path / "index")
    for a, b in zip(reopened.search(queries, k=10), before, strict=True):
        assert a.equals(b)
    stale = (tmp_path / "index" / "ann.faiss").read_bytes()
    later = clustered(5, seed=9) + 3.0 * np.eye(DIM, dtype=np.float32)[20:25]
    later_ids = reopened.add(later)
    (tmp_path / "index" / "ann.faiss").write_bytes(stale)
    again = Index.open(tmp_path / "index")
    assert [f["id"].iloc[0] for f in again.search(later, k=1)] == list(later_ids)


def test_ann_finds_the_exact_neighbours_of_isotropic_noise(tmp_path):
    """Every row's codes are compared by default, so even vectors without structure (the
    worst case for cells and graphs) get their true top 10 after re-ranking."""
    data, queries = gaussian(5000), gaussian(30, seed=1)
    index = Index.create(tmp_path / "index", DIM, ann_threshold=1000)
    index.add(data)
    index.optimize()
    assert index.has_ann
    truth, _ = brute_force(data, queries, "cosine", 10)
    found = index.search(queries, k=10)
    recall = np.mean([len(set(f["id"]) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95


@pytest.mark.parametrize("metric", ["dot", "l2"])
def test_ann_scores_follow_the_metric(tmp_path, metric):
    data, queries = clustered(2000), clustered(5, seed=1)
    index = Index.create(tmp_path / "index", DIM, metric=metric, ann_threshold=1000)
    index.add(data)
    truth, scores = brute_force(data, queries, metric, 5)
    for frame, ids, expected in zip(index.search(queries, k=5), truth, scores, strict=True):
        assert index.has_ann
        assert frame["id"].tolist() == ids.tolist()
        assert np.allclose(frame["score"], expected, atol=1e-4)


def test_small_tables_are_always_compared_exactly(tmp_path):
    index = Index.create(tmp_path / "index", DIM, ann_threshold=10)
    index.add(gaussian(200))
    index.search(gaussian(2, seed=1), k=3, exact=False)
    index.optimize()
    assert not index.has_ann  # too few rows to fit the approximate index's cells


def test_bad_input_names_the_row(tmp_path):
    index = Index.create(tmp_path / "index", DIM)
    data = gaussian(8)
    data[3, 5] = np.nan
    with pytest.raises(ValueError, match="row 3 has NaN"):
        index.add(data)
    data[3, 5] = 0.0
    data[6] = 0.0
    with pytest.raises(ValueError, match="row 6 has only zeros"):
        index.add(data)
    with pytest.raises(ValueError, match=rf"\[n, {DIM}\].*\(8, 16\)"):
        index.add(gaussian(8)[:, :16])
    with pytest.raises(ValueError, match="metadata has 2 rows but there are 8 vectors"):
        index.add(gaussian(8), pd.DataFrame({"split": ["a", "b"]}))
    with pytest.raises(ValueError, match="'score' is not allowed"):
        index.add(gaussian(8), pd.DataFrame({"score": range(8)}))
    with pytest.raises(ValueError, match="real numbers"):
        index.add(np.array([["a"] * DIM]))
    assert len(index) == 0  # nothing was written by the failed calls
    index.add(gaussian(8), pd.DataFrame({"label": range(8)}))
    with pytest.raises(ValueError, match="queries row 1 has NaN"):
        index.search(np.stack([gaussian(1)[0], np.full(DIM, np.nan, np.float32)]))
    with pytest.raises(ValueError, match="'label' holds .*string but the index stores int64"):
        index.add(gaussian(1), pd.DataFrame({"label": ["seven"], "new": [1]}))
    assert len(index) == 8 and index.metadata_columns == ["label"]
    # a new column is added, empty for older rows; a missing one is left empty
    assert index.add(gaussian(2), pd.DataFrame({"caption": ["a cat", "a dog"]})).tolist() == [8, 9]
    stored = index.search(gaussian(1, seed=3), k=10)[0].set_index("id").sort_index()
    assert list(stored.columns) == ["score", "label", "caption"]
    assert stored.loc[8:9, "caption"].tolist() == ["a cat", "a dog"]
    assert stored.loc[:7, "caption"].isna().all() and stored.loc[8:9, "label"].isna().all()
