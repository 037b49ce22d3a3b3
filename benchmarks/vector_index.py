"""The vector index (polymodal.search: LanceDB, and FAISS past a row threshold) against
numpy brute force and two other approximate indexes.

    .venv/bin/python benchmarks/vector_index.py [--rows 1000000] [--dim 256] [--queries 200]
                                                [--exact-rows 100000]

For each distribution it builds an index of `--rows` vectors with the approximate (ANN)
index and one of `--exact-rows` vectors searched exhaustively, and prints a markdown table:
build time, size on disk, p50/p99 latency of single queries (k=10, timed through
`Index.search`, so DataFrame assembly included), and recall@10 against the exact top-10
computed by numpy. `--probes` (shares of the cells, several by commas, each searched on the
one build) sets `IndexSettings.ann_probes`.

`--engines` picks the rows (default polymodal,numpy):
- polymodal: `polymodal.search.Index`, approximate at `--rows`, exact at `--exact-rows`;
- numpy: brute force, the vectors in memory (its "disk" is the .npy file it would load);
- lancedb-hnsw: LanceDB's own IVF_HNSW_SQ index (what `Index` used before FAISS), `--ef`
  settings, 2 × k candidates re-ranked;
- usearch: HNSW (connectivity 32, expansion 200 while adding), `--usearch-ef` settings; it
  builds its graph on every core (one thread takes about 2× as long), searches on one; it
  comes with the `bench` extra.
The peers return ids only; `Index.search` also returns each hit's stored columns.

Data, cosine metric, unit vectors:
- gaussian: isotropic Gaussian vectors, the worst case for any ANN (no structure; every
  neighbour nearly as far as the next);
- clustered: a mixture of Gaussians (`rows // 1000` centres, noise 0.7 × the centre's scale
  per dimension);
- embeddings: real model embeddings, read from `--embeddings` (the folder that
  `benchmarks/image_embeddings.py` writes: AV-MNIST images through a match model's image
  tower, augmented to a million).

Threads: every latency is on ONE thread. Before numpy or LanceDB load, the script sets
OMP/OPENBLAS/MKL_NUM_THREADS=1 (numpy's BLAS), LANCE_CPU_THREADS=1 and RAYON_NUM_THREADS=1
(LanceDB's compute pools), and it calls torch.set_num_threads(1). LANCE_IO_THREADS stays at its
default: set to 1, LanceDB 0.40.0 hangs while training an index (observed here). The
settings hold for the whole process, so build times are single-threaded too (usearch's
excepted); `Index` itself sets no limits and builds on every core.

Goals printed beside the figures: recall@10 >= 0.95 at p50 <= 10 ms for ANN at 1M rows;
exact search p50 <= 50 ms at 100k rows.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"
os.environ["LANCE_CPU_THREADS"] = "1"
os.environ["RAYON_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import ROOT, machine  # noqa: E402

sys.path.insert(0, str(ROOT / "src"))

from polymodal.search import Index  # noqa: E402

K = 10
ADD_CHUNK = 100_000  # rows per Index.add and per block of numpy work, to bound memory
WARMUP = 5  # queries run before timing (opening files, loading the index)
ANN_GOAL = (0.95, 10.0)  # recall@10, p50 ms
EXACT_GOAL = 50.0  # p50 ms
DISTRIBUTIONS = ("gaussian", "clustered", "embeddings")
ENGINES = ("polymodal", "numpy", "lancedb-hnsw", "usearch")
PEERS_OF_ANN = ("lancedb-hnsw", "usearch")  # approximate only: not run on the exact-search rows


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def make_data(distribution: str, args: argparse.Namespace, seed: int = 0):
    """Base vectors and held-out queries drawn from the same distribution, or read from the
    files `benchmarks/image_embeddings.py` writes."""
    rows, queries, dim = args.rows, args.queries, args.dim
    if distribution == "embeddings":
        base = np.load(args.embeddings / "vectors.npy", mmap_mode="r")
        held_out = np.load(args.embeddings / "queries.npy")
        if len(base) < rows or len(held_out) < queries:
            sys.exit(f"{args.embeddings} holds {len(base):,} vectors and {len(held_out)} queries")
        return unit(np.asarray(base[:rows])), unit(held_out[:queries])
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(16, rows // 1000), dim), dtype=np.float32)

    def draw(n: int) -> np.ndarray:
        noise = rng.standard_normal((n, dim), dtype=np.float32)
        if distribution == "gaussian":
            return unit(noise)
        return unit(centres[rng.integers(0, len(centres), n)] + 0.7 * noise)

    chunks = [draw(min(ADD_CHUNK, rows - start)) for start in range(0, rows, ADD_CHUNK)]
    return np.concatenate(chunks), draw(queries)


def numpy_top_k(base: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Exact top-k ids for many queries, in blocks of rows so memory stays small."""
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, len(base), ADD_CHUNK):
        scores = queries @ base[start : start + ADD_CHUNK].T
        ids = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        scores = np.concatenate([best_scores, scores], axis=1)
        ids = np.concatenate([best_ids, ids], axis=1)
        keep = np.argsort(-scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(scores, keep, axis=1)
        best_ids = np.take_along_axis(ids, keep, axis=1)
    return best_ids


def brute_force(base: np.ndarray, query: np.ndarray, k: int = K) -> np.ndarray:
    """The numpy baseline's single query: every score, then the top k."""
    scores = base @ query
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def timed_queries(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray):
    """Per-query latencies (s) and the ids each query returned."""
    for query in queries[:WARMUP]:
        search(-query)  # other queries than those timed, so none finds its own pages cached
    latencies, found = [], []
    for query in queries:
        start = time.perf_counter()
        found.append(search(query))
        latencies.append(time.perf_counter() - start)
    return np.array(latencies), found


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def build_index(folder: Path, base: np.ndarray, ann: bool) -> tuple[Index, float]:
    """An index of `base`, with the ANN index built when `ann`; returns it and seconds."""
    start = time.perf_counter()
    threshold = len(base) if ann else len(base) + 1
    index = Index.create(folder, base.shape[1], metric="cosine", ann_threshold=threshold)
    for offset in range(0, len(base), ADD_CHUNK):
        index.add(base[offset : offset + ADD_CHUNK])
    index.optimize()  # builds the ANN index (ann) or only compacts (exact)
    return index, time.perf_counter() - start


def polymodal_rows(folder: Path, base, queries, truth, ann: bool, probes: list[float]) -> list:
    """One row per share of cells probed (the index built once), or one for exact search."""
    index, seconds = build_index(folder, base, ann)
    mb = folder_mb(folder)
    search = lambda q: index.search(q, k=K, exact=not ann)[0]["id"].to_numpy()  # noqa: E731
    if not ann:
        latencies, found = timed_queries(search, queries)
        return [
            figures(
                "polymodal", "exact (in memory)", len(base), seconds, mb, latencies, found, truth
            )
        ]
    rows = []
    for share in probes:
        index.settings = index.settings.model_copy(update={"ann_probes": share})  # read per search
        latencies, found = timed_queries(search, queries)
        mode = f"approximate (FAISS IVF-PQ 4-bit fast scan), {share:g} of cells probed"
        rows.append(figures("polymodal", mode, len(base), seconds, mb, latencies, found, truth))
    return rows


def lancedb_hnsw_rows(folder: Path, base, queries, truth, efs: list[int]) -> list[dict]:
    """LanceDB's own IVF_HNSW_SQ index on a plain table, a row per query setting `ef`."""
    import lancedb
    import pyarrow as pa
    from lancedb.index import HnswSq

    start = time.perf_counter()
    table = lancedb.connect(str(folder)).create_table(
        "vectors",
        pa.table(
            {
                "id": np.arange(len(base)),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(base.ravel()), base.shape[1]),
            }
        ),
    )
    table.create_index("vector", config=HnswSq(distance_type="cosine"))
    seconds = time.perf_counter() - start
    rows = []
    for ef in efs:

        def search(query: np.ndarray, ef: int = ef) -> np.ndarray:
            hits = table.search(query).distance_type("cosine").limit(K).ef(ef).refine_factor(2)
            return hits.select(["id", "_distance"]).to_arrow()["id"].to_numpy()

        latencies, found = timed_queries(search, queries)
        mode = f"IVF_HNSW_SQ, ef {ef}, refine ×2"
        mb = folder_mb(folder)
        rows.append(figures("LanceDB", mode, len(base), seconds, mb, latencies, found, truth))
    return rows


def usearch_rows(folder: Path, base, queries, truth, efs: list[int]) -> list[dict]:
    """HNSW over float32 vectors, built on every core, a row per search expansion."""
    from usearch.index import Index as Graph

    start = time.perf_counter()
    graph = Graph(ndim=base.shape[1], metric="ip", connectivity=32, expansion_add=200)
    graph.add(np.arange(len(base)), base, threads=0)
    graph.save(str(folder / "hnsw.usearch"))
    seconds = time.perf_counter() - start
    rows = []
    for ef in efs:
        graph.expansion_search = ef
        search = lambda q: graph.search(q, K, threads=1).keys  # noqa: E731
        latencies, found = timed_queries(search, queries)
        mode = f"HNSW M 32, ef {ef} (built on every core)"
        mb = folder_mb(folder)
        rows.append(figures("usearch", mode, len(base), seconds, mb, latencies, found, truth))
    return rows


def numpy_row(folder: Path, base, queries, truth) -> dict:
    start = time.perf_counter()
    copy = np.ascontiguousarray(unit(base))  # what "building" is for brute force
    np.save(folder / "vectors.npy", copy)
    seconds = time.perf_counter() - start
    latencies, found = timed_queries(lambda q: brute_force(copy, q), queries)
    return figures(
        "numpy", "brute force", len(base), seconds, folder_mb(folder), latencies, found, truth
    )


def figures(engine, mode, rows, seconds, mb, latencies, found, truth) -> dict:
    return {
        "engine": engine,
        "mode": mode,
        "rows": rows,
        "build_s": seconds,
        "disk_mb": mb,
        "p50_ms": 1e3 * float(np.percentile(latencies, 50)),
        "p99_ms": 1e3 * float(np.percentile(latencies, 99)),
        "recall": recall(found, truth),
    }


def goal(row: dict, ann: bool, target_rows: int) -> str:
    """The goal for this row, met or missed, and at which size it is stated."""
    if ann:
        met = row["recall"] >= ANN_GOAL[0] and row["p50_ms"] <= ANN_GOAL[1]
        text = f"recall ≥ {ANN_GOAL[0]} at p50 ≤ {ANN_GOAL[1]:g} ms (1M rows)"
    else:
        met = row["p50_ms"] <= EXACT_GOAL
        text = f"p50 ≤ {EXACT_GOAL:g} ms (100k rows)"
    where = "" if row["rows"] == target_rows else f", measured at {row['rows']:,}"
    return f"{'met' if met else 'MISSED'}: {text}{where}"


def run_distribution(distribution: str, args: argparse.Namespace, scratch: Path) -> None:
    """Table lines for one distribution: every engine at --rows (polymodal approximate), then
    polymodal (exact) and numpy at --exact-rows; the approximate-only peers skip those."""
    base, queries = make_data(distribution, args)
    for rows, ann, target in ((args.rows, True, 1_000_000), (args.exact_rows, False, 100_000)):
        subset = base[:rows]
        truth = numpy_top_k(subset, queries)
        folder = scratch / f"{distribution}-{rows}-{'ann' if ann else 'exact'}"
        for engine in args.engines:
            if engine in PEERS_OF_ANN and not ann:
                continue
            (folder / engine).mkdir(parents=True)
            for row in engine_rows(engine, folder / engine, subset, queries, truth, ann, args):
                row_goal = goal(row, ann, target) if engine != "numpy" else ""
                print(table_line(distribution, row, row_goal), flush=True)


def engine_rows(engine: str, folder: Path, base, queries, truth, ann: bool, args) -> list[dict]:
    if engine == "polymodal":
        return polymodal_rows(folder, base, queries, truth, ann, args.probes)
    if engine == "lancedb-hnsw":
        return lancedb_hnsw_rows(folder, base, queries, truth, args.ef)
    if engine == "usearch":
        return usearch_rows(folder, base, queries, truth, args.usearch_ef)
    return [numpy_row(folder, base, queries, truth)]


def table_line(distribution: str, row: dict, row_goal: str) -> str:
    figures = f"{row['build_s']:.1f} | {row['disk_mb']:.0f} | {row['p50_ms']:.2f} "
    figures += f"| {row['p99_ms']:.2f} | {row['recall']:.3f}"
    return f"| {distribution} | {row['engine']} | {row['mode']} | {row['rows']:,} | {figures} | {row_goal} |"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the ANN index")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-rows", type=int, default=100_000, help="rows searched exactly")
    parser.add_argument("--data", default="gaussian,clustered", help="distributions, by commas")
    parser.add_argument(
        "--embeddings",
        type=Path,
        default=ROOT / "runs" / "embeddings",
        help="for --data embeddings: the folder benchmarks/image_embeddings.py wrote",
    )
    parser.add_argument("--scratch", type=Path, default=None, help="folder for the indexes")
    parser.add_argument("--engines", default="polymodal,numpy", help=", ".join(ENGINES))
    parser.add_argument("--probes", default="1", help="shares of cells probed, by commas")
    parser.add_argument("--ef", default="400,1600", help="LanceDB's HNSW settings, by commas")
    parser.add_argument("--usearch-ef", default="256,1024", help="usearch settings, by commas")
    args = parser.parse_args()
    args.data = args.data.split(",")
    args.engines = args.engines.split(",")
    args.ef = [int(ef) for ef in args.ef.split(",")]
    args.probes = [float(share) for share in args.probes.split(",")]
    args.usearch_ef = [int(ef) for ef in args.usearch_ef.split(",")]
    if set(args.data) - set(DISTRIBUTIONS):
        parser.error(f"--data takes {', '.join(DISTRIBUTIONS)}")
    if set(args.engines) - set(ENGINES):
        parser.error(f"--engines takes {', '.join(ENGINES)}")
    if not all(0 < share <= 1 for share in args.probes):
        parser.error("--probes takes shares in (0, 1]")
    if args.exact_rows > args.rows or args.queries <= WARMUP:
        parser.error(f"--exact-rows must be at most --rows, and --queries above {WARMUP}")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    print(machine())
    print(f"{args.rows:,} × {args.dim} vectors, {args.queries} queries, k={K}, cosine, 1 thread\n")
    print(
        "| data | engine | mode | rows | build s | disk MB | p50 ms | p99 ms | recall@10 | goal |"
    )
    print("|" + "---|" * 10, flush=True)
    if args.scratch is not None:
        Path(args.scratch).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        for distribution in args.data:
            run_distribution(distribution, args, Path(scratch))


if __name__ == "__main__":
    main()
