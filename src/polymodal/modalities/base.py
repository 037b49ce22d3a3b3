"""What every modality provides, and the registry that names them (as timm registers models).

A modality (image, audio, video, text, number, category) is one folder holding its decoder,
fitted state, augmentation, robustness noise, attribution hooks, encoders and serving
description. Code outside those folders asks the modality object, never a kind's name:
`modality(state.kind).encode(...)`, `modality(kind).files`.

This module imports nothing from the modality folders (nor from `polymodal.config`), so any
module may import it without an import cycle; `polymodal.modalities` fills the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from polymodal.registry import Registry

MODALITIES: Registry[Modality] = Registry("modality")
FEATURE_EPSILONS = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
FEATURE_UNIT = "ε (standard deviations, L∞)"


@dataclass(frozen=True)
class Widget:
    """How the serving page asks for one column: `control` is file, text, number or select;
    `accept` feeds a file input's accept attribute, `capture` offers the camera or the
    microphone, `preview` names the element that shows a chosen file (img, audio, video)."""

    control: str
    accept: str | None = None
    capture: str | None = None
    preview: str | None = None


@dataclass(frozen=True)
class FitContext:
    """Everything fitting may read besides the cells: the table's folder, the preprocessing
    settings (`polymodal.config.PreprocessSettings`), a pretrained encoder's state, and
    whether a target transcribes the inputs from start to end (`whole_clips`: audio and
    video then keep their longest clips whole instead of cropping a tail)."""

    base_dir: Path
    settings: Any
    pretrained: Any = None
    whole_clips: bool = False


@dataclass
class EncodeContext:
    """Where encoding reads files, logs bad cells and caches decoded arrays."""

    base_dir: Path
    log: Any  # polymodal.data.problems.ProblemLog
    cache: Any  # polymodal.data.cache.FeatureCache
    row_ids: list[int] | None = None


@dataclass
class Sweep:
    """One robustness curve: an input corrupted at growing strength."""

    input: str
    perturbation: str
    unit: str
    levels: list[float]  # from mild to strong; the clean score is kept apart
    apply: Any  # (level, rng) → the input's new feature item


class Modality:
    """One kind of input. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    state: ClassVar[type]  # its pydantic fitted state, with `kind: Literal[name]`
    files: ClassVar[bool] = False  # cells name files; rows sharing one stay on one split side
    tabular: ClassVar[bool] = False  # one value per row: drawn together, compared as one group
    embedded: ClassVar[bool] = False  # integer ids: attributions taken at the embedding
    continuous: ClassVar[bool] = False  # features an attacker may nudge (FGSM, PGD)
    groups_rows: ClassVar[bool] = False  # its values name groups of rows (report slices)
    lenient: ClassVar[bool] = False  # serving: its problems are warnings, not errors
    pretrained: ClassVar[bool] = False  # has a pretrained-encoder adapter
    tower: ClassVar[str | None] = None  # a two-tower model's attribute that reads this kind
    rank: ClassVar[int] = 0  # serving: the kind that names a column several inputs read
    formats: ClassVar[tuple[str, ...]] = ()  # file formats read, for people
    sniffed: ClassVar[frozenset[str]] = frozenset()  # media kinds of bytes it accepts
    widget: ClassVar[Widget] = Widget("text")
    # The search query that fills an input of this kind: "text" (a typed string) or, for a
    # file, the name of the query option that carries it; None: no query fills it.
    query: ClassVar[str | None] = None

    def fit(self, cells: list, column: str, source: str, context: FitContext) -> Any:
        """Learn the fitted state from the training rows' cells."""
        raise NotImplementedError

    def encode(self, state: Any, cells: list, context: EncodeContext) -> Any:
        """Cells → `FeatureColumn`; bad cells are masked and logged to `context.log`."""
        raise NotImplementedError

    def augment(self, values: torch.Tensor) -> torch.Tensor:
        """A training batch's features, randomly altered; the same by default."""
        return values

    def sweeps(self, state: Any, item: dict, cells: list, base_dir: Path) -> list[Sweep]:
        """Noise sweeps for robustness curves; `item` is the input's clean feature tensors."""
        return []

    def epsilons(self) -> tuple[list[float], str]:
        """Adversarial ε levels and their unit."""
        return FEATURE_EPSILONS, FEATURE_UNIT

    def attack_scale(self, state: Any) -> torch.Tensor:
        """Feature units in one unit of ε."""
        return torch.tensor(1.0)

    def summarise(self, state: Any, item: Any) -> dict:
        """A JSON summary of one input's attributions (`InputAttribution`)."""
        return {"attribution": float(np.sum(item.attributions))}

    def figure(self, state: Any, item: Any) -> Any:
        """A matplotlib figure of one input's attributions; None when drawn otherwise."""
        return None

    def field_choices(self, state: Any) -> list[str] | None:
        """Values a serving form offers for the column; None: free input."""
        return None

    def backbone_tokens(
        self, backbone: Any, pretrained: Any, values: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A pretrained backbone's tokens for this modality's features: (hidden, mask)."""
        raise NotImplementedError(f"{self.name} inputs have no pretrained encoders")


def register(cls: type[Modality]) -> type[Modality]:
    """Class decorator: `@register` files a modality under its `name`."""
    return MODALITIES.register(cls.name, files=cls.files)(cls)


_INSTANCES: dict[str, Modality] = {}


def modality(kind: str) -> Modality:
    """The registered modality called `kind`; an unknown kind raises with the known ones."""
    if kind not in _INSTANCES:
        _INSTANCES[kind] = MODALITIES.create(kind)
    return _INSTANCES[kind]


def kinds() -> list[str]:
    return MODALITIES.names()


def file_kinds() -> list[str]:
    return MODALITIES.names(files=True)


def query_kinds() -> dict[str, tuple[str, ...]]:
    """Each search query (`search --text`, `--image`, ...) and the input kinds it fills, from
    the modalities' `query`: a typed string fills text and category inputs, a file its kind."""
    queries: dict[str, tuple[str, ...]] = {}
    for kind in kinds():
        query = modality(kind).query
        if query is not None:
            queries[query] = (*queries.get(query, ()), kind)
    return queries
