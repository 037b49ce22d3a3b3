"""The task contract: what a target column is and how it is learned, decoded, scored and served.

A task is one object per target, bound to that target's fitted `TargetState`. Everything that
depends on the kind of target lives on it: fitting and encoding the target, the head, the loss
(over the whole batch, so a contrastive task can see every row), decoding outputs to columns,
metrics with their direction, the score that early stopping and `compare` use, the value that
Shapley contributions explain, and the target's part of a serving response. Nothing outside
`polymodal.tasks` asks which task a target is.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from polymodal.config import TargetConfig
from polymodal.data.problems import BadInputError
from polymodal.fusion.base import Fused
from polymodal.registry import Registry


class TargetState(BaseModel):
    """What fitting learned about one target; saved in config.json."""

    column: str
    task: str
    weight: float = 1.0
    separator: str = "|"
    classes: list[str] = []  # label names for class tasks
    mean: float = 0.0  # numeric targets are learned standardised
    std: float = 1.0
    options: dict[str, Any] = {}  # the task's own fitted state (e.g. a text target's tokenizer)


class TargetPrediction(BaseModel):
    """One row's prediction for one target in a serving response; tasks add their fields."""

    model_config = ConfigDict(extra="allow")
    predicted: Any


class Head(nn.Module):
    """`Fused` features → raw outputs [batch, outputs]: one small MLP per fusion branch, their
    outputs combined with the fusion's weights (late fusion has several branches)."""

    def __init__(self, outputs: int, dim: int, branches: int, dropout: float) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(dim),
                nn.Linear(dim, dim),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(dim, outputs),
            )
            for _ in range(branches)
        )

    def forward(self, fused: Fused) -> torch.Tensor:
        outputs = torch.stack(
            [branch(fused.features[:, i]) for i, branch in enumerate(self.branches)], dim=1
        )
        return (outputs * fused.weights.unsqueeze(-1)).sum(dim=1)


NEARLY_UNIQUE_SHARE, NEARLY_UNIQUE_COUNT = 0.5, 20


def nearly_unique(values: list) -> bool:
    """Whether a column of (non-missing) values is mostly distinct strings (captions, names,
    transcripts): as classes, most would be seen once, and valid or test rows could hardly
    ever be scored."""
    texts = [str(v).strip() for v in values if not isinstance(v, list | tuple | np.ndarray)]
    if len(texts) < len(values) or not texts:
        return False
    if pd.to_numeric(pd.Series(texts), errors="coerce").notna().all():
        return False  # numbers are regression's or labels, never text
    distinct = len(set(texts))
    return distinct >= NEARLY_UNIQUE_COUNT and distinct >= NEARLY_UNIQUE_SHARE * len(texts)


def paths_ending(values: list, extensions: Collection[str]) -> bool:
    """Whether every value is a file path with one of these extensions (a generated-file
    target's column: images, music)."""
    return all(isinstance(v, str) and Path(v.strip()).suffix.lower() in extensions for v in values)


Options = TypeVar("Options", bound=BaseModel)


def one_line(error: ValidationError) -> str:
    """A pydantic error as one line: where, then what."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def target_options(
    options: type[Options], config: TargetConfig, table_name: str, task: str
) -> Options:
    """A target's YAML `options` checked against its task's settings, or a one-line error
    naming the table and column."""
    try:
        return options.model_validate(config.options)
    except ValidationError as error:
        raise BadInputError(
            f"{table_name}: {task} target '{config.column}' options: {one_line(error)}"
        ) from None


def mean_over_known(per_row: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Average loss over rows whose target is known; 0 (with a gradient path) if none are."""
    known = known.to(per_row.dtype)
    return (per_row * known).sum() / known.sum().clamp(min=1.0)


class Task:
    """Base class of every task; subclasses set `name` and register with `@register_task`.

    `metrics` maps each scalar metric that `evaluate` returns to True where higher is better;
    `score_metric` is the one early stopping, `compare` and the explanations rank by.
    `inference_order` places the task in automatic inference (lower asks first); None: the
    task is used only when the config names it.
    """

    name: ClassVar[str]
    metrics: ClassVar[dict[str, bool]] = {}
    score_metric: ClassVar[str]
    inference_order: ClassVar[int | None] = None
    explained: ClassVar[str] = "the prediction"  # what Shapley contributions add up to
    # True: the head is also given the encoded target while training (teacher forcing) and
    # is called without it to predict; False: the head only ever sees the fused inputs.
    teacher_forced: ClassVar[bool] = False
    # False: the output is not one differentiable score, so Captum has nothing to attribute
    # (a generated text); explanations then give Shapley contributions only.
    attributable: ClassVar[bool] = True
    takes_options: ClassVar[bool] = False  # reads `TargetConfig.options` (others refuse them)
    writes_text: ClassVar[bool] = False  # `predicted` is free text: the page can read it aloud
    # True: the head is given each of `columns` fused alone (every other input masked as
    # missing), not all inputs fused together: a match target embeds each column on its own.
    fuses_apart: ClassVar[bool] = False
    # True: the target's cells are file paths, resolved against the table's folder before
    # `fit` and `encode` see them (an image target reads its files itself).
    reads_files: ClassVar[bool] = False
    # The prediction-time settings `set_decoding` takes (`Model.set_decoding` hands each task
    # only its own, and refuses a name that no task of the model takes).
    decoding: ClassVar[tuple[str, ...]] = ()
    # True: validation ranks epochs by `validation_score` of the teacher-forced outputs (a
    # generator's loss on fixed noise) rather than by generating every validation row.
    scored_by_loss: ClassVar[bool] = False
    # The media type of the file a generated target makes ("image/png"; "audio/wav"), carried
    # by its `prediction` as a data: URL; None: not a media generator. `POST /v1/generate`
    # samples the targets that set it, and the web page offers Generate when a model has one.
    generates: ClassVar[str | None] = None
    # True: the target follows its inputs from start to end (a transcript), so fitting keeps
    # the longest audio and video clips whole: the usual crop of their longest twentieth would
    # cut the last words off.
    reads_whole_clips: ClassVar[bool] = False

    def __init__(self, state: TargetState) -> None:
        self.state = state
        self.origin: dict[str, Any] = {}  # the saved model this task belongs to (set_origin)

    # ---------------------------------------------------------------- the target
    @classmethod
    def count_generated(cls, paths: Sequence[str]) -> int:
        """How many of `paths` (one column's cells as paths; missing or non-file cells
        included) are files this task generated, told by the provenance mark it writes into
        them. `polymodal inspect` asks every registered task, so a table's generated rows stay
        known after they are appended to a training set; 0 for a task that writes no files."""
        return 0

    @classmethod
    def cells(
        cls, frame: pd.DataFrame, config: TargetConfig | TargetState, table_name: str
    ) -> list:
        """The target's cells, one per row of `frame`: its column's values. A match target
        without a key column reads row positions instead (each row is its own pair)."""
        if config.column not in frame.columns:
            columns = ", ".join(map(str, frame.columns))
            raise BadInputError(
                f"{table_name}: no target column '{config.column}' (columns: {columns})"
            )
        return frame[config.column].tolist()

    @classmethod
    def input_columns(cls, config: TargetConfig) -> list[str] | None:
        """The input columns this target reads, when it names them (a match target's
        columns); None: every column that is not a target."""
        return None

    @classmethod
    def claims(cls, values: list) -> bool:
        """Whether inference should pick this task for a column with these (non-missing)
        values; asked in `inference_order`."""
        return False

    @classmethod
    def fit(cls, values: list, config: TargetConfig, table_name: str) -> TargetState:
        """Learn label maps or scaling from the training rows' non-missing values."""
        raise NotImplementedError

    def encode(self, cells: list) -> tuple[np.ndarray, np.ndarray]:
        """(values, known) training arrays; `known` is False where a row adds no loss."""
        raise NotImplementedError

    def set_decoding(self, options: dict[str, Any]) -> bool:
        """Apply prediction-time decoding settings (beam width, ...) and keep them in
        `state.options`, where `Model.decoding` reads them back to restore; False: this task
        has none."""
        return False

    def set_origin(self, origin: dict[str, Any]) -> None:
        """Which saved model this task's predictions come from (its folder's name and a
        digest of its weights): a task that writes files marks them with it."""
        self.origin = dict(origin)

    def number_rows(self, first: int) -> None:
        """The rows predicted next are numbered from `first` (a chunk of a larger table): a
        generating task seeds each row's noise and names its files by row number, so a row's
        sample does not depend on batching or chunking."""

    # ------------------------------------------------------------- the network
    @property
    def outputs(self) -> int:
        """Width of the head's raw output."""
        raise NotImplementedError

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one row's raw output (a text head's holds several hypotheses)."""
        return (self.outputs,)

    def head(self, dim: int, branches: int, dropout: float) -> nn.Module:
        return Head(self.outputs, dim, branches, dropout)

    @property
    def columns_apart(self) -> list[str]:
        """With `fuses_apart`: the input columns the head is given, each fused alone."""
        return []

    def embedding(self, head: nn.Module, fused: Fused, column: str | None) -> torch.Tensor | None:
        """The vector `Model.embed` returns for `column` (fused alone) when this target
        defines an embedding space for it (a match target's shared space); None: not one."""
        return None

    def shared_space(self) -> frozenset[str]:
        """The columns whose `embedding` vectors this target trains to agree with each other
        (a match target's), so a query through one can search stored vectors of another."""
        return frozenset()

    def class_vectors(self, head: nn.Module) -> tuple[list[str], torch.Tensor] | None:
        """The classes this target placed in its `shared_space`, as names and one unit vector
        each [classes, dim] (a match by class's proxies, which every column's vectors were
        pulled to), for a search by the query's class; None: it placed none."""
        return None

    def loss(
        self, outputs: torch.Tensor, target: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        """The loss over the whole batch (a scalar)."""
        raise NotImplementedError

    # --------------------------------------------------------------- decoding
    def decode(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs → decoded arrays (labels, probabilities, values in target units)."""
        raise NotImplementedError

    def combine(self, decoded: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Several models' decoded outputs → one (an ensemble of unimodal models)."""
        raise NotImplementedError

    def columns(self, decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Prediction columns of `Model.predict`."""
        raise NotImplementedError

    def probabilities(self, decoded: dict[str, np.ndarray]) -> pd.DataFrame:
        raise ValueError(f"target '{self.state.column}' is a {self.state.task} target: no classes")

    def prediction(self, decoded: dict[str, np.ndarray], row: int) -> TargetPrediction:
        """One row's part of a serving response."""
        raise NotImplementedError

    # ---------------------------------------------------------------- scoring
    def evaluate(self, true: np.ndarray, known: np.ndarray, decoded: dict) -> dict:
        """Metrics over rows with a known target; {"rows": 0} when there are none."""
        raise NotImplementedError

    @property
    def weight_averaging(self) -> float:
        """The decay of an exponential moving average of the weights that training keeps
        (validated, checkpointed and saved instead of the raw weights); 0: none. Generators
        ask for one: samples from averaged weights are much cleaner early in training."""
        return 0.0

    def validation_score(self, outputs: np.ndarray, true: np.ndarray, known: np.ndarray) -> float:
        """The score early stopping ranks epochs by, from the validation outputs (generated
        ones; the teacher-forced ones with `scored_by_loss`)."""
        return self.score(true, known, self.decode(outputs))

    def score(self, true: np.ndarray, known: np.ndarray, decoded: dict) -> float:
        """`score_metric`, signed so that higher is better (NaN without known rows)."""
        if not known.any():
            return float("nan")
        value = self.evaluate(true, known, decoded)[self.score_metric]
        return value if self.metrics[self.score_metric] else -value

    # ------------------------------------------------------------ explanation
    def reference(self, decoded: dict[str, np.ndarray]) -> tuple[np.ndarray, list]:
        """(what each row's explanation is about, its prediction), fixed once from the
        outputs with every input, so every coalition is scored on the same thing (for class
        tasks: the predicted class)."""
        raise NotImplementedError

    def explained_value(self, decoded: dict[str, np.ndarray], reference: np.ndarray) -> np.ndarray:
        """Per row, the number Shapley contributions explain."""
        raise NotImplementedError

    def attribution_output(self, outputs: torch.Tensor) -> torch.Tensor:
        """Differentiable scores that Captum attributes (indexed by the reference)."""
        raise NotImplementedError

    def attribution_index(self, reference: int) -> int | None:
        """Which column of `attribution_output` to attribute; None: the output is one number."""
        return int(reference)


TASKS: Registry[Task] = Registry("task")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: files a task under its `name` (an unknown name later raises with the
    known ones)."""
    return TASKS.register(cls.name)(cls)


def task_for(state: TargetState) -> Task:
    """The task object of a fitted target."""
    return TASKS.create(state.task, state)
