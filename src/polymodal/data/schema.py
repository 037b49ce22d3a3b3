"""Which kind each column holds, inferred from its content and overridable in the config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from polymodal.config import Config, ConfigError
from polymodal.data.column import is_missing
from polymodal.data.files import resolve_path
from polymodal.data.problems import BadInputError
from polymodal.data.sniff import kind_from_extension, sniff_file
from polymodal.data.table import SPLIT_COLUMN, Table

SAMPLE = 200
IGNORED = "ignored"


@dataclass
class ColumnInfo:
    """One column as `polymodal inspect` shows it."""

    name: str
    kind: str
    reason: str
    present: int
    missing: int
    unique: int
    example: str


def infer_kind(series: pd.Series, base_dir: Path) -> tuple[str, str]:
    """(kind, why): files by their bytes, then numbers, then categories versus free text."""
    values = [v for v in series.tolist() if not is_missing(v)]
    if not values:
        return IGNORED, "every cell is empty"
    sample = values[:: max(1, len(values) // SAMPLE)][:SAMPLE]
    media = _media_kind(sample, base_dir)
    if media:
        return media
    if isinstance(sample[0], list | tuple | np.ndarray):
        return IGNORED, "cells hold lists"
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
    if numbers.notna().mean() >= 0.95:
        whole = np.all(np.mod(numbers.dropna(), 1) == 0)
        if whole and numbers.nunique() == len(values) and numbers.is_monotonic_increasing:
            return IGNORED, "a row identifier (unique increasing integers)"
        return "number", "numeric values"
    texts = [str(v) for v in values]
    unique = len(set(texts))
    words = np.mean([len(t.split()) for t in sample])
    if unique <= max(20, 0.2 * len(texts)) and words < 4:
        return "category", f"{unique} distinct short values"
    return "text", f"free text, {words:.1f} words on average"


def _media_kind(sample: list, base_dir: Path) -> tuple[str, str] | None:
    """A column of file paths: the kind most of its existing files' bytes show."""
    if not all(isinstance(v, str) for v in sample):
        return None
    if not any(kind_from_extension(v) or "/" in v or _is_file(v, base_dir) for v in sample):
        return None
    found: dict[str, int] = {}
    exists = 0
    for value in sample:
        is_file = _is_file(value, base_dir)
        kind = sniff_file(resolve_path(value, base_dir)) if is_file else None
        exists += is_file
        kind = kind or kind_from_extension(value)
        if kind:
            found[kind] = found.get(kind, 0) + 1
    if not found:
        return None
    kind = max(found, key=found.get)
    how = "file contents" if exists else "file extensions (files not found)"
    return kind, f"paths to {kind} files, by {how}"


def _is_file(value: str, base_dir: Path) -> bool:
    if len(value) > 1024 or "\n" in value:
        return False
    try:
        return resolve_path(value, base_dir).is_file()
    except OSError:  # e.g. a name too long for the file system: not a path
        return False


def resolve_inputs(table: Table, config: Config, targets: list[str]) -> dict[str, str]:
    """Input column → kind, after config overrides and `inputs` selection. Errors are one line."""
    frame = table.frame
    known = set(frame.columns) | set(config.columns)
    chosen = config.inputs or inputs_named_by_targets(config)
    for name in chosen or []:
        if name not in known:
            raise BadInputError(
                f"{table.name}: no column '{name}' (columns: {sorted(frame.columns)})"
            )
    for name, column in config.columns.items():
        source = column.source or name
        if source not in frame.columns:
            raise BadInputError(f"config: column '{name}' reads '{source}', which the table lacks")
    names = chosen or [c for c in frame.columns if c not in targets and c != SPLIT_COLUMN]
    names += [n for n in config.columns if config.columns[n].source and n not in names]
    if chosen:
        names = [n for n in names if n in chosen]
    kinds: dict[str, str] = {}
    for name in names:
        if name in targets:
            raise BadInputError(f"column '{name}' is a target and cannot also be an input")
        override = config.columns.get(name)
        if override and override.kind:
            kinds[name] = known_kind(name, override.kind)
            continue
        kind, _ = infer_kind(frame[name], table.base_dir)
        if kind != IGNORED:
            kinds[name] = kind
    if not kinds:
        raise BadInputError(f"{table.name}: no usable input columns besides the target")
    return kinds


def inputs_named_by_targets(config: Config) -> list[str] | None:
    """The inputs the targets name (a match target's columns); None: all but the targets."""
    if not any(target.task for target in config.targets):
        return None  # an inferred task never names its inputs; no need to import torch
    from polymodal.tasks.targets import target_inputs

    return target_inputs(config.targets)


def known_kind(column: str, kind: str) -> str:
    """A kind the config names, checked against the registered modalities."""
    from polymodal.modalities import MODALITIES  # loads torch: only when a kind is named

    if kind not in MODALITIES.names():
        known = ", ".join(MODALITIES.names())
        raise ConfigError(f"config: columns.{column}.kind: unknown kind {kind!r}; known: {known}")
    return kind


def file_columns(kinds: dict[str, str], config: Config) -> list[str]:
    """The table columns behind file inputs (an input may read another column, as a video's
    sound track does): rows sharing one of their files stay on one side of a split."""
    from polymodal.modalities import modality  # loads torch: `inspect` and checks need none

    sources = {
        (config.columns[name].source if name in config.columns else None) or name
        for name, kind in kinds.items()
        if modality(kind).files
    }
    return sorted(sources)


def describe_columns(table: Table) -> list[ColumnInfo]:
    infos = []
    for name in table.frame.columns:
        series = table.frame[name]
        kind, reason = infer_kind(series, table.base_dir)
        present = [v for v in series.tolist() if not is_missing(v)]
        example = str(present[0]) if present else ""
        infos.append(
            ColumnInfo(
                name=name,
                kind=kind,
                reason=reason,
                present=len(present),
                missing=len(series) - len(present),
                unique=len({str(v) for v in present}),
                example=example[:60],
            )
        )
    return infos
