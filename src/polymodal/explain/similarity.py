"""Why a search hit is similar to its query: the similarity score attributed to the stored
input's values (an image's pixels, a recording's spectrogram, a clip's frames).

A stored row's vector is `Model.embed(data, column=...)`: the fused vector the heads read,
with every other input masked as a missing one is. Its score against a query vector q is
s(x) = cosine(embed(x), q) (or the dot product, or −‖embed(x) − q‖ for an l2 index, so that
higher is always more alike). Integrated Gradients attribute s(x) − s(baseline) to the
input's values, with the same baseline as `attributions.py`: zeros after normalisation, the
training mean. Any kind whose values are continuous can be explained so; integer ids (text,
categories) cannot be interpolated. The row's other inputs stay masked throughout, so they
cannot move the map.

>>> result = similarity_attribution(model, "data.csv", "image", query, row=12)
>>> result.map                       # an image's [H, W]: |attribution| summed over channels
>>> result.completeness_gap          # Σ attributions − (s(x) − s(baseline)), near 0
>>> write_similarity_figure(model, result, "why.png")
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from captum.attr import IntegratedGradients

from polymodal.data.problems import BadInputError, ProblemLog
from polymodal.data.table import Table, read_table
from polymodal.explain.attributions import (
    STEPS,
    InputAttribution,
    first_length,
    row_encoded_with,
)
from polymodal.explain.runner import Runner
from polymodal.explain.scoring import Features, take_rows
from polymodal.modalities import modality
from polymodal.model import DataLike, Model, only_input, without_other_inputs
from polymodal.search.embeddings import described

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from polymodal.search.embeddings import SearchResult

SIMILARITIES = ("cosine", "dot", "l2")
ROW = "row"  # the table row a search hit came from (polymodal.search.embeddings.ROW)


@dataclass
class SimilarityAttribution(InputAttribution):
    """Attributions of one row's similarity to a query, shaped like the input's features
    (an image's [channels, H, W]); `score` is s(x), `baseline_score` s(baseline)."""

    metric: str = "cosine"
    score: float = math.nan
    baseline_score: float = math.nan

    @property
    def map(self) -> np.ndarray:
        """|attribution| summed over the first axis: an image's channels, giving [H, W]."""
        return np.abs(self.attributions).sum(axis=0)

    @property
    def total(self) -> float:
        """The attributions' sum: by IG's completeness, ≈ s(x) − s(baseline)."""
        return float(self.attributions.sum())

    @property
    def completeness_gap(self) -> float:
        """Σ attributions − (s(x) − s(baseline)): IG's error, which more steps shrink."""
        return self.total - (self.score - self.baseline_score)


def similarity(vectors: torch.Tensor, query: torch.Tensor, metric: str) -> torch.Tensor:
    """[n, dim] vectors against a [dim] query → [n] scores, higher is more alike."""
    if metric == "cosine":
        return torch.nn.functional.cosine_similarity(vectors, query[None], dim=1)
    if metric == "dot":
        return vectors @ query
    return -torch.linalg.vector_norm(vectors - query[None], dim=1)


def similarity_attribution(
    model: Model,
    data: DataLike | Features,
    column: str,
    query: np.ndarray,
    *,
    row: int = 0,
    metric: str = "cosine",
    steps: int = STEPS,
) -> SimilarityAttribution:
    """Integrated Gradients of row `row`'s similarity to `query` over input `column`.

    `data` is a table (only that row's `column` cell is read, as `Model.embed(column=...)`
    reads it) or features from `Model.encode`. Every other input is masked as missing, so
    s(x) is the `metric` score of the row's indexed vector against `query`.
    """
    kind = check_continuous_input(model, column)
    if metric not in SIMILARITIES:
        raise BadInputError(f"metric {metric!r}: choose one of {', '.join(SIMILARITIES)}")
    if steps < 1:
        raise BadInputError(f"steps must be at least 1, not {steps}")
    vector = checked_query(query, model.config.model.dim, metric)
    features = one_row(model, data, column, row)
    runner = Runner(model, only_input(features, column))
    forward = similarity_forward(runner, column, torch.from_numpy(vector), metric)
    item = runner.features[column]
    values = item["values"].float()
    baseline = torch.zeros_like(values)
    with torch.enable_grad():
        scores = IntegratedGradients(forward).attribute(
            values, baselines=baseline, n_steps=steps, internal_batch_size=steps
        )
    with torch.no_grad():
        at_input, at_baseline = forward(torch.cat([values, baseline])).tolist()
    attributions = scores.detach()[0].float().numpy()
    result = SimilarityAttribution(
        input=column,
        kind=kind,
        attributions=attributions,
        values=values[0].numpy(),
        length=first_length(item),
        metric=metric,
        score=at_input,
        baseline_score=at_baseline,
    )
    result.summary = {
        **modality(kind).summarise(model.schema_.input(column), result),
        "metric": metric,
        "score": at_input,
        "baseline_score": at_baseline,
        "attribution_sum": result.total,
    }
    return result


def similarity_forward(
    runner: Runner, column: str, query: torch.Tensor, metric: str
) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(values of `column` for a batch of steps) → [steps] similarities to `query`. The
    other inputs (all masked) are encoded once and repeated for every step."""

    def forward(values: torch.Tensor) -> torch.Tensor:
        encoded = row_encoded_with(runner, column, values)
        vectors = runner.net.embedding(encoded, column).float()
        return similarity(vectors, query, metric)

    return forward


def check_continuous_input(model: Model, column: str) -> str:
    """The input's kind, which must have continuous values for the gradients to follow."""
    if model.schema_ is None or model.net_ is None:
        raise RuntimeError("this Model is not fitted yet: call fit() or Model.load()")
    kinds = model.schema_.kinds
    if column not in kinds:
        raise BadInputError(f"no input named {column!r}; the model's inputs: {described(kinds)}")
    if not modality(kinds[column]).continuous:
        continuous = ", ".join(
            kind for kind in sorted(set(kinds.values())) if modality(kind).continuous
        )
        raise BadInputError(
            f"input {column!r} is {kinds[column]}: similarity attributions explain inputs with "
            f"continuous values ({continuous or 'none in this model'}), not ids"
        )
    return kinds[column]


def checked_query(query: np.ndarray, dim: int, metric: str) -> np.ndarray:
    vector = np.asarray(query, dtype=np.float32)
    if vector.ndim == 2 and vector.shape[0] == 1:
        vector = vector[0]
    if vector.shape != (dim,):
        raise BadInputError(f"the query must be one vector of {dim} numbers, got {vector.shape}")
    if not np.isfinite(vector).all():
        raise BadInputError("the query has NaN or infinite values")
    if metric == "cosine" and not np.any(vector):
        raise BadInputError("the query is all zeros: it has no direction for cosine")
    return vector


def one_row(model: Model, data: DataLike | Features, column: str, row: int) -> Features:
    """Features of row `row` alone; from a table, only `column`'s cell is decoded."""
    if isinstance(data, dict):
        total = len(data[column]["present"])
        check_row(row, total)
        features = take_rows(data, np.array([row]))
        if not bool(features[column]["present"][0]):
            raise BadInputError(f"row {row} has no {column!r} (missing or undecodable)")
        return features
    table = read_table(data)
    check_row(row, len(table))
    frame = table.frame.iloc[[row]].reset_index(drop=True)
    single = Table(frame, table.base_dir, table.name)
    log = ProblemLog(table=table.name)
    features = model.encode(without_other_inputs(single, model.schema_, column), log)
    if not bool(features[column]["present"][0]):
        found = next((p for p in log.problems if p.column == column), None)
        if found is None:
            raise BadInputError(f"row {row} has no {column!r}: the cell is empty")
        raise BadInputError(replace(found, row=row).describe())  # the table's row, not 0
    return features


def check_row(row: int, total: int) -> None:
    if not 0 <= row < total:
        raise BadInputError(f"row {row} is out of range: the table has {total} rows")


# ------------------------------------------------------------------------ pictures
def similarity_figure(model: Model, result: SimilarityAttribution) -> Figure:
    """The input's explain figure (an image, its map of |attribution| and the two overlaid),
    titled with the score."""
    figure = modality(result.kind).figure(model.schema_.input(result.input), result)
    figure.suptitle(
        f"{result.input}: {result.metric} similarity {result.score:.3f} "
        f"(baseline {result.baseline_score:.3f})",
        fontsize=10,
    )
    return figure


def write_similarity_figure(model: Model, result: SimilarityAttribution, path: str | Path) -> Path:
    """`similarity_figure` as a PNG at `path` (its folder made if needed)."""
    from polymodal.explain.render import png_bytes

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png_bytes(similarity_figure(model, result)))
    return out


def explain_hit(
    model: Model,
    data: DataLike,
    hit: int | Any,
    query: np.ndarray,
    out: str | Path,
    *,
    db: str | Path | None = None,
    column: str | None = None,
    metric: str | None = None,
    steps: int = STEPS,
) -> SimilarityAttribution:
    """Explain one search hit and draw it to `out` (PNG).

    `hit` is a row of `data` (the table the index was built from), or a hit record from
    `Index.search` / `search_index` whose `row` names it. With `db` (the index folder) the
    column and metric are the index's own; otherwise `column` is needed and `metric`
    defaults to cosine.
    """
    if db is not None:
        from polymodal.search.embeddings import open_index, read_source

        column = column or read_source(Path(db)).column
        metric = metric or open_index(Path(db)).settings.metric
    if column is None:
        raise BadInputError("which input? pass column=... or the index folder as db=...")
    row = hit if isinstance(hit, int | np.integer) else hit_row(hit)
    result = similarity_attribution(
        model, data, column, query, row=int(row), metric=metric or "cosine", steps=steps
    )
    write_similarity_figure(model, result, out)
    return result


def hit_row(hit: Any) -> int:
    """The table row of a hit record (a dict, or a row of the hits frame)."""
    if ROW not in hit:
        raise BadInputError(f"the hit has no {ROW!r}: pass the table row number instead")
    return int(hit[ROW])


def explain_search_hits(result: SearchResult, out: str | Path, top: int = 3) -> list[Path]:
    """A figure per hit, for the `top` best hits of a search over an index of a continuous
    input (images, recordings, clips): why each stored item is like the query
    (`hit-<rank>-id-<id>.png` in `out`, a new or empty folder, so nothing written before is
    replaced). A hit whose stored file cannot be found (a relative path of an index made
    before tables were recorded) is skipped."""
    folder = Path(out)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} exists and is not an empty folder; choose a new one")
    column = result.source.column
    check_continuous_input(result.model, column)
    source_column = result.model.schema_.input(column).source
    written = []
    for rank, hit in enumerate(result.hits.head(top).to_dict("records"), start=1):
        stored = result.source.stored_file(int(hit["id"]), hit)
        if stored is None:
            continue
        table = pd.DataFrame({source_column: [str(stored)]})
        attribution = similarity_attribution(
            result.model, table, column, result.query, metric=result.metric
        )
        path = folder / f"hit-{rank}-id-{int(hit['id'])}.png"
        written.append(write_similarity_figure(result.model, attribution, path))
    return written
