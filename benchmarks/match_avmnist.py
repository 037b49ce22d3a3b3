"""AV-MNIST retrieval: spoken digit → images and image → recordings, class level.

`polymodal train avmnist.csv --match image=audio --positive-by label` (defaults) against a
baseline that needs no shared space: two unimodal classifiers (polymodal, defaults, the same
split), ranking items by the dot product of the query's and the item's class probabilities.
Both are scored by `tasks.match.metrics.retrieval_metrics` over the 1,000 test rows: every
test recording queries the 1,000 test images (and back); positives share the digit. The match
model is scored twice: by cosine to each query's vector (`polymodal search`) and to its
nearest class's vector (`polymodal search --by-class`).

.venv/bin/python benchmarks/match_avmnist.py [--out runs/bench-match] [--seed 0]
[--augment] [--no-proxies] [--skip-baseline] [--audio-encoder audio_cnn_fine]

`--augment` applies to the match model and both classifiers alike, so the baseline gets what
the match model gets.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import DATASETS, ROOT, machine, require

sys.path.insert(0, str(ROOT / "src"))

from polymodal import Model  # noqa: E402
from polymodal.config import Config, TargetConfig  # noqa: E402
from polymodal.tasks.match import match_target, retrieval_metrics  # noqa: E402

DIRECTIONS = (("audio", "image"), ("image", "audio"))
SHOWN = ("precision@1", "mAP", "recall@5", "median_rank")


def train_match(
    table: Path, out: Path, seed: int, proxies: bool, augment: bool, audio_encoder: str
) -> tuple[Model, float]:
    config = Config()
    config.train.seed = seed
    config.train.augment = augment
    config.model.encoders = {"audio": audio_encoder}
    config.targets = [match_target(["image", "audio"], positive_by="label")]
    config.targets[0].options["proxies"] = proxies
    started = time.perf_counter()
    model = Model(config=config).fit(table, out=out, overwrite=True)
    return model, time.perf_counter() - started


def train_classifier(
    table: Path, column: str, out: Path, seed: int, augment: bool, audio_encoder: str
) -> tuple[Model, float]:
    config = Config(targets=[TargetConfig(column="label")], inputs=[column])
    config.train.seed = seed
    config.train.augment = augment
    if column == "audio":
        config.model.encoders = {"audio": audio_encoder}
    started = time.perf_counter()
    model = Model(config=config).fit(table, out=out, overwrite=True)
    return model, time.perf_counter() - started


def match_scores(model: Model, test: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """Two rows for one model: ranked by cosine to each query's vector (`polymodal search`),
    and to the vector of its nearest class (`polymodal search --by-class`, `class_query`)."""
    vectors = {column: model.embed(test, column=column) for column in ("image", "audio")}
    labels = test["label"].astype(str).to_numpy()
    rows = {
        "": {
            f"{query}→{item}": retrieval_metrics(vectors[query], vectors[item], labels, labels)
            for query, item in DIRECTIONS
        }
    }
    if model.class_vectors("audio") is None:  # SupCon alone: no class vectors
        return rows
    # imported after training: LanceDB's runtime does not like the data loaders' fork
    from polymodal.search.embeddings import class_query

    by_class = {
        column: np.stack([class_query(model, column, vector)[0] for vector in vectors[column]])
        for column in vectors
    }
    rows[", by class"] = {
        f"{query}→{item}": retrieval_metrics(by_class[query], vectors[item], labels, labels)
        for query, item in DIRECTIONS
    }
    return rows


def baseline_scores(classifiers: dict[str, Model], test: pd.DataFrame) -> dict[str, dict]:
    """Rank by p_query · p_item, the two classifiers' class probabilities. retrieval_metrics
    ranks by cosine, so the vectors are scaled to unit length per query: the order of items
    for one query is the order of the dot products, unchanged by dividing by a constant; the
    items are not rescaled (that would change their order), so the items' norm is put back
    into an extra dimension that the normalisation leaves alone."""
    probabilities = {
        column: model.predict_proba(test).to_numpy(np.float64)
        for column, model in classifiers.items()
    }
    labels = test["label"].astype(str).to_numpy()
    return {
        f"{query}→{item}": dot_product_ranking(probabilities[query], probabilities[item], labels)
        for query, item in DIRECTIONS
    }


def dot_product_ranking(queries: np.ndarray, items: np.ndarray, labels: np.ndarray) -> dict:
    """retrieval_metrics by raw dot product: items embedded as [p, sqrt(R² - |p|²)] and
    queries as [q, 0] (R the largest item norm): every item then has norm R, so cosine
    order equals dot-product order for each query."""
    radius = np.linalg.norm(items, axis=1).max()
    padding = np.sqrt(np.maximum(radius**2 - (items**2).sum(axis=1), 0.0))[:, None]
    items = np.hstack([items, padding])
    queries = np.hstack([queries, np.zeros((len(queries), 1))])
    return retrieval_metrics(queries, items, labels, labels)


def print_table(rows: dict[str, dict[str, dict[str, float]]], seconds: dict[str, float]) -> None:
    header = ["system", "direction", *SHOWN, "train s"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for system, directions in rows.items():
        for direction, metrics in directions.items():
            cells = [f"{metrics[name]:.3f}" for name in SHOWN]
            print(
                f"| {system} | {direction} | " + " | ".join(cells) + f" | {seconds[system]:.0f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-match")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-proxies", action="store_true", help="SupCon alone")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--audio-encoder", default="audio_cnn", help="for the match model and the audio classifier"
    )
    parser.add_argument(
        "--augment", action="store_true", help="image shifts and SpecAugment for all three models"
    )
    args = parser.parse_args()
    table = require(DATASETS / "avmnist" / "avmnist.csv")
    frame = pd.read_csv(table)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    test = test.assign(**{c: [str(table.parent / p) for p in test[c]] for c in ("image", "audio")})
    print(f"{machine()}; {len(test)} test rows")
    shutil.rmtree(args.out, ignore_errors=True)
    match, match_seconds = train_match(
        table, args.out / "match", args.seed, not args.no_proxies, args.augment, args.audio_encoder
    )
    name = "polymodal match" + (" (SupCon only)" if args.no_proxies else "")
    rows, seconds = {}, {}
    for way, scores in match_scores(match, test).items():
        rows[name + way], seconds[name + way] = scores, match_seconds
    if not args.skip_baseline:
        classifiers, total = {}, 0.0
        for column in ("image", "audio"):
            classifiers[column], spent = train_classifier(
                table, column, args.out / f"only-{column}", args.seed, args.augment,
                args.audio_encoder,
            )  # fmt: skip
            total += spent
            accuracy = classifiers[column].metrics_["test"]["label"]["accuracy"]
            print(f"{column}-only classifier: test accuracy {accuracy:.3f} in {spent:.0f} s")
        rows["two classifiers, p·p"] = baseline_scores(classifiers, test)
        seconds["two classifiers, p·p"] = total
    print_table(rows, seconds)


if __name__ == "__main__":
    main()
