"""The match task: two or more columns trained into one embedding space.

`polymodal train data.csv --match image=audio [--positive-by label] [--anchor image]`. The
target is named after its columns (`image=audio`). Each column is fused alone (every other
input masked, as a missing one is) and projected into the shared space by a head of its own;
the loss is the symmetric InfoNCE over in-batch negatives with a learned temperature, averaged
over the column pairs (each column with the anchor, or all pairs). With `positive_by`, rows
that share that column's value are positives of each other (supervised contrastive); without
it each row is its own pair.

The raw output of a row is [columns, dim + 1]: each column's unit vector and, last, whether
the column was present in that row (a missing one adds no loss and is never ranked).
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn
from torch.nn import functional as F

from polymodal.config import TargetConfig
from polymodal.data.column import is_missing
from polymodal.data.problems import BadInputError
from polymodal.fusion.base import Fused, pooled
from polymodal.tasks.base import TargetPrediction, TargetState, Task, register_task
from polymodal.tasks.match.cli import TASK
from polymodal.tasks.match.loss import (
    LearnedTemperature,
    column_pairs,
    gathered_info_nce,
    world_size,
)
from polymodal.tasks.match.metrics import retrieval_metrics

RANKED = ("recall@1", "recall@5", "recall@10", "precision@1", "median_rank", "mAP")


class MatchOptions(BaseModel):
    """A match target's settings (`TargetConfig.options`), saved in config.json."""

    model_config = ConfigDict(extra="forbid")
    columns: list[str] = Field(min_length=2)
    anchor: str | None = Field(None, description="bind every column to this one; None: all pairs")
    positive_by: str | None = Field(
        None, description="rows sharing this column's value are positives (class level)"
    )
    proxies: bool = Field(
        True,
        description="with positive_by: also pull each column's vectors to a learned vector per "
        "class, shared by all columns (Proxy-NCA), so every tower learns the classes as a "
        "classifier would and all towers meet at the same points",
    )


def match_target(
    columns: list[str], positive_by: str | None = None, anchor: str | None = None
) -> TargetConfig:
    """The target config of a match over `columns` (the CLI's `--match a=b`)."""
    options = MatchOptions(columns=columns, anchor=anchor, positive_by=positive_by)
    return TargetConfig(
        column="=".join(columns), task=TASK, options=options.model_dump(exclude_none=True)
    )


def parse_options(config: TargetConfig | TargetState, table_name: str = "config") -> MatchOptions:
    try:
        options = MatchOptions.model_validate(config.options)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BadInputError(
            f"{table_name}: match target '{config.column}': options.{where}: {first['msg']}"
        ) from None
    if len(set(options.columns)) != len(options.columns):
        raise BadInputError(f"match target '{config.column}': a column is named twice")
    if options.anchor is not None and options.anchor not in options.columns:
        raise BadInputError(
            f"match target '{config.column}': the anchor '{options.anchor}' is not one of "
            f"its columns ({', '.join(options.columns)})"
        )
    if options.positive_by in options.columns:
        raise BadInputError(
            f"match target '{config.column}': --positive-by {options.positive_by} is one of "
            "the matched columns; name the column whose shared values make rows positives"
        )
    return options


UNSEEN_KEYS = (1 << 62) - 1  # a value unseen in training gets a key in [classes, 2^62)


def stable_key(value: object) -> int:
    """An int64 key of a cell's value, the same in every process and run (not `hash`)."""
    digest = hashlib.blake2b(str(value).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


MAX_PROXIES = 10_000  # more classes than this are groups of a few rows, not classes


class MatchHead(nn.Module):
    """One projection per column into the shared space, the learned temperature and, for a
    match by class, one learned vector per class (its proxy)."""

    def __init__(self, columns: list[str], dim: int, classes: int = 0) -> None:
        super().__init__()
        self.columns = columns
        self.projections = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim)) for _ in columns
        )
        self.temperature = LearnedTemperature()
        self.proxies = nn.Parameter(torch.randn(classes, dim) * 0.02) if classes else None

    def project(self, column: str, features: torch.Tensor) -> torch.Tensor:
        """[batch, dim] pooled features of `column` alone → unit vectors in the shared space."""
        projected = self.projections[self.columns.index(column)](features)
        return F.normalize(projected.float(), dim=-1)

    def forward(self, apart: dict[str, Fused], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """[batch, columns, dim + 1]: each column's unit vector, then its presence flag."""
        rows = [
            torch.cat([self.project(c, pooled(apart[c])), present[c].float()[:, None]], dim=-1)
            for c in self.columns
        ]
        return torch.stack(rows, dim=1)


class MatchPrediction(TargetPrediction):
    predicted: float | None  # the first pair's cosine similarity; None if a column is missing
    similarities: dict[str, float | None]


@register_task
class MatchTask(Task):
    name = TASK
    metrics: ClassVar[dict[str, bool]] = {
        "recall@1": True,
        "recall@5": True,
        "recall@10": True,
        "precision@1": True,
        "median_rank": False,
        "mAP": True,
    }
    score_metric = "mAP"
    explained = "the similarity of the first pair of columns"
    takes_options = True
    fuses_apart = True

    def __init__(self, state: TargetState) -> None:
        super().__init__(state)
        self.options = parse_options(state)
        self.pairs = column_pairs(self.options.columns, self.options.anchor)
        self._head: MatchHead | None = None  # the head built for this task holds the temperature

    # ---------------------------------------------------------------- the target
    @classmethod
    def cells(
        cls, frame: pd.DataFrame, config: TargetConfig | TargetState, table_name: str
    ) -> list:
        """The `positive_by` column's values; without one, each row's position (its own key)."""
        options = parse_options(config, table_name)
        if options.positive_by is None:
            return list(range(len(frame)))
        if options.positive_by not in frame.columns:
            columns = ", ".join(map(str, frame.columns))
            raise BadInputError(
                f"{table_name}: --positive-by {options.positive_by}: no such column "
                f"(columns: {columns})"
            )
        return frame[options.positive_by].tolist()

    @classmethod
    def input_columns(cls, config: TargetConfig) -> list[str] | None:
        return list(parse_options(config).columns)

    @classmethod
    def fit(cls, values: list, config: TargetConfig, table_name: str) -> TargetState:
        options = parse_options(config, table_name)
        classes = sorted({str(v) for v in values}) if options.positive_by else []
        if options.positive_by is not None and len(classes) < 2:
            raise BadInputError(
                f"{table_name}: --positive-by {options.positive_by} has one value in the "
                "training rows: every row would be a positive of every other"
            )
        with_proxies = options.proxies and len(classes) <= min(MAX_PROXIES, len(values) // 2)
        return TargetState(
            column=config.column,
            task=cls.name,
            weight=config.weight,
            classes=classes if with_proxies else [],
            options=options.model_dump(exclude_none=True),
        )

    def encode(self, cells: list) -> tuple[np.ndarray, np.ndarray]:
        """(int64 keys, known). Without `positive_by`: row positions. With it: a class seen in
        training is its index (the row of its proxy); any other value a stable key above
        every index, so rows that share it are still each other's positives."""
        if self.options.positive_by is None:
            return np.asarray(cells, dtype=np.int64), np.ones(len(cells), dtype=bool)
        index = {name: i for i, name in enumerate(self.state.classes)}
        known = np.array([not is_missing(cell) for cell in cells], dtype=bool)
        keys = [
            index.get(str(cell), len(index) + (stable_key(cell) & UNSEEN_KEYS)) if ok else 0
            for cell, ok in zip(cells, known, strict=True)
        ]
        return np.asarray(keys, dtype=np.int64), known

    # ------------------------------------------------------------- the network
    @property
    def columns_apart(self) -> list[str]:
        return list(self.options.columns)

    def head(self, dim: int, branches: int, dropout: float) -> nn.Module:
        self._head = MatchHead(self.columns_apart, dim, classes=len(self.state.classes))
        return self._head

    def embedding(self, head: nn.Module, fused: Fused, column: str | None) -> torch.Tensor | None:
        if column not in self.options.columns:
            return None
        return head.project(column, pooled(fused))

    def shared_space(self) -> frozenset[str]:
        return frozenset(self.options.columns)

    def class_vectors(self, head: nn.Module) -> tuple[list[str], torch.Tensor] | None:
        if not isinstance(head, MatchHead) or head.proxies is None:
            return None
        return list(self.state.classes), F.normalize(head.proxies.detach().float(), dim=-1)

    def scale(self) -> torch.Tensor:
        if self._head is None:
            raise RuntimeError("the match head is not built yet")
        return self._head.temperature()

    def loss(
        self, outputs: torch.Tensor, target: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        """Mean over the column pairs of the symmetric InfoNCE over rows where both columns
        are present, plus, with class proxies, the mean over columns of each row's
        cross-entropy against the proxies. In 32-bit: a bf16 logit at scale 100 would be off
        by a quarter."""
        with torch.autocast(outputs.device.type, enabled=False):
            vectors, present = outputs[..., :-1].float(), outputs[..., -1] > 0.5
            scale = self.scale().float()
            known = known.bool()
            losses = [
                loss
                for loss in (self.pair_loss(vectors, present, target, known, scale),
                             self.proxy_loss(vectors, present, target, known, scale))
                if loss is not None
            ]  # fmt: skip
            if not losses:
                return outputs.sum() * 0.0  # keeps a gradient path
            return torch.stack(losses).sum()

    def pair_loss(
        self, vectors: torch.Tensor, present: torch.Tensor, keys: torch.Tensor,
        known: torch.Tensor, scale: torch.Tensor,
    ) -> torch.Tensor | None:  # fmt: skip
        """Mean over the column pairs of the symmetric InfoNCE over rows where both columns are
        present; under several processes, against every process's rows (the local loss), and
        every process computes every pair, since each one gathers."""
        losses = []
        alone = world_size() == 1
        by_key = keys if self.options.positive_by else None
        for x, y in self.pairs:
            i, j = self.options.columns.index(x), self.options.columns.index(y)
            rows = present[:, i] & present[:, j] & known
            if alone and int(rows.sum()) < 2:
                continue  # no negative to contrast with
            losses.append(gathered_info_nce(vectors[:, i], vectors[:, j], scale, by_key, rows))
        return torch.stack(losses).mean() if losses else None

    def proxy_loss(
        self, vectors: torch.Tensor, present: torch.Tensor, keys: torch.Tensor,
        known: torch.Tensor, scale: torch.Tensor,
    ) -> torch.Tensor | None:  # fmt: skip
        """Each column's vectors classified against the class proxies (cosine logits at the
        learned scale): the towers meet at one point per class."""
        proxies = self._head.proxies if self._head is not None else None
        if proxies is None:
            return None
        proxies = F.normalize(proxies.float(), dim=-1)
        seen = known & (keys < len(proxies))
        losses = []
        for index in range(len(self.options.columns)):
            rows = present[:, index] & seen
            if rows.any():
                logits = scale * vectors[rows, index] @ proxies.T
                losses.append(F.cross_entropy(logits, keys[rows]))
        return torch.stack(losses).mean() if losses else None

    # --------------------------------------------------------------- decoding
    def decode(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        decoded = {"embeddings": outputs[..., :-1], "present": outputs[..., -1] > 0.5}
        for x, y in self.pairs:
            decoded[f"{x}={y}"] = self.pair_similarity(decoded, x, y)
        return decoded

    def pair_similarity(self, decoded: dict[str, np.ndarray], x: str, y: str) -> np.ndarray:
        """Cosine similarity of each row's `x` and `y` vectors; NaN where either is missing."""
        i, j = self.options.columns.index(x), self.options.columns.index(y)
        vectors = decoded["embeddings"]
        values = (vectors[:, i] * vectors[:, j]).sum(axis=-1)
        both = decoded["present"][:, i] & decoded["present"][:, j]
        return np.where(both, values, np.nan).astype(np.float32)

    def combine(self, decoded: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        raise BadInputError(
            f"match target '{self.state.column}': models of one input each cannot be combined "
            "into a match of several columns"
        )

    def columns(self, decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {f"{x}={y}_similarity": decoded[f"{x}={y}"] for x, y in self.pairs}

    def prediction(self, decoded: dict[str, np.ndarray], row: int) -> MatchPrediction:
        values = {f"{x}={y}": as_number(decoded[f"{x}={y}"][row]) for x, y in self.pairs}
        return MatchPrediction(predicted=next(iter(values.values())), similarities=values)

    # ---------------------------------------------------------------- scoring
    def evaluate(self, true: np.ndarray, known: np.ndarray, decoded: dict) -> dict[str, Any]:
        """Retrieval in both directions of every pair over the rows given: queries are the
        rows where the query column is present, items those where the other column is; a
        query's positives share its key (its class, or its own row). The unprefixed metrics
        are means over the directions."""
        present = decoded["present"] & known[:, None]
        if not present.any(axis=0).all():
            return {"rows": 0}
        vectors = decoded["embeddings"]
        result: dict[str, Any] = {"rows": int(known.sum())}
        per_direction = []
        for x, y in self.pairs:
            for query, item in ((x, y), (y, x)):
                q, i = self.options.columns.index(query), self.options.columns.index(item)
                ranked = retrieval_metrics(
                    vectors[present[:, q], q], vectors[present[:, i], i],
                    true[present[:, q]], true[present[:, i]],
                )  # fmt: skip
                result |= {f"{query}→{item}/{name}": value for name, value in ranked.items()}
                per_direction.append(ranked)
        for name in RANKED:
            result[name] = float(np.nanmean([ranked[name] for ranked in per_direction]))
        return result

    # ------------------------------------------------------------ explanation
    def reference(self, decoded: dict[str, np.ndarray]) -> tuple[np.ndarray, list]:
        first = decoded[f"{self.pairs[0][0]}={self.pairs[0][1]}"]
        return np.zeros(len(first), dtype=np.int64), [as_number(v) for v in first]

    def explained_value(self, decoded: dict[str, np.ndarray], reference: np.ndarray) -> np.ndarray:
        first = decoded[f"{self.pairs[0][0]}={self.pairs[0][1]}"]
        return np.nan_to_num(first, nan=0.0)

    def attribution_output(self, outputs: torch.Tensor) -> torch.Tensor:
        x, y = (self.options.columns.index(c) for c in self.pairs[0])
        return (outputs[:, x, :-1] * outputs[:, y, :-1]).sum(dim=-1)

    def attribution_index(self, reference: int) -> int | None:
        return None


def as_number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
