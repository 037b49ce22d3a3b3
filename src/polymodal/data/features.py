"""From a table to arrays: fit preprocessing on the training rows, then encode any rows.

`FittedSchema` is everything learned from the data (kinds, tokenizers, vocabularies, scaling,
label maps). It is saved in config.json, so a loaded model preprocesses exactly as in training.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, Field

from polymodal.config import Config
from polymodal.data.cache import FeatureCache
from polymodal.data.column import FeatureColumn
from polymodal.data.files import encoded_column_key
from polymodal.data.pretrained import fit_pretrained
from polymodal.data.problems import BadInputError, Problem, ProblemLog
from polymodal.data.schema import resolve_inputs
from polymodal.data.table import Table
from polymodal.modalities import MODALITIES, modality
from polymodal.modalities.base import EncodeContext, FitContext
from polymodal.tasks import TASKS, TargetState, fit_target

# Every registered modality's fitted state, told apart by its `kind` (as saved in config.json).
InputState = Annotated[
    functools.reduce(operator.or_, [MODALITIES.get(kind).state for kind in MODALITIES.names()]),
    Field(discriminator="kind"),
]


class FittedSchema(BaseModel):
    inputs: list[InputState]
    targets: list[TargetState]

    def input(self, name: str) -> InputState:
        for state in self.inputs:
            if state.column == name:
                return state
        raise KeyError(f"no input named {name!r}; inputs: {[s.column for s in self.inputs]}")

    @property
    def kinds(self) -> dict[str, str]:
        return {state.column: state.kind for state in self.inputs}


def fit_schema(table: Table, rows: np.ndarray, config: Config) -> FittedSchema:
    """Learn preprocessing from the training rows only (no peeking at validation or test)."""
    train = table.frame.iloc[rows]
    targets = [
        fit_target(train, t, table.name, table.base_dir) for t in config.targets
    ]  # first: a missing one
    kinds = resolve_inputs(table, config, [target.column for target in config.targets])
    whole_clips = any(TASKS.get(target.task).reads_whole_clips for target in targets)
    inputs = []
    for name, kind in kinds.items():
        override = config.columns.get(name)
        source = override.source if override and override.source else name
        cells = train[source].tolist()
        inputs.append(_fit_input(kind, cells, name, source, table, config, whole_clips))
    return FittedSchema(inputs=inputs, targets=targets)


def _fit_input(
    kind: str,
    cells: list,
    name: str,
    source: str,
    table: Table,
    config: Config,
    whole_clips: bool,
) -> InputState:
    choice = config.model.encoder_choice(name, kind)
    pretrained = fit_pretrained(choice, name) if choice and choice.pretrained else None
    reader = modality(kind)
    if pretrained and not reader.pretrained:
        raise BadInputError(f"column '{name}': {kind} inputs have no pretrained encoders")
    context = FitContext(table.base_dir, config.preprocess, pretrained, whole_clips)
    return reader.fit(cells, name, source, context)


def raise_missing_column(table: Table, name: str, role: str) -> None:
    raise BadInputError(
        f"{table.name}: no {role} column '{name}' (columns: {', '.join(map(str, table.frame.columns))})"
    )


def encode_inputs(
    schema: FittedSchema, table: Table, log: ProblemLog, cache: FeatureCache
) -> dict[str, FeatureColumn]:
    """Features for every input and row of `table`; bad cells are masked and logged under
    their row number in the file (`table.first_row` on)."""
    features = {}
    row_ids = list(range(table.first_row, table.first_row + len(table)))
    for state in schema.inputs:
        if state.source not in table.frame.columns:
            raise_missing_column(table, state.source, "input")
        cells = table.frame[state.source].tolist()
        features[state.column] = _encode_input(state, cells, table, log, cache, row_ids)
    return features


def _encode_input(
    state: InputState,
    cells: list,
    table: Table,
    log: ProblemLog,
    cache: FeatureCache,
    row_ids: list[int],
) -> FeatureColumn:
    """The modality's encoding of the cells; a column of files is read back from the cache's
    encoded columns when the same files were encoded under the same state before."""
    reader = modality(state.kind)
    code = encoding_code(state.kind) if reader.files else None
    key = None
    if code is not None:
        settings = {"state": state.model_dump(mode="json"), "code": code}
        key = encoded_column_key(cells, table.base_dir, settings, cache)
    stored = cache.get_column(key) if key is not None else None
    if stored is not None:
        arrays, problems = stored
        for problem in problems:  # reported again, as a fresh encoding would
            log.add(row_ids[problem["at"]], state.column, problem["path"], problem["reason"])
        return FeatureColumn(arrays["values"], arrays["present"], arrays.get("lengths"))
    logged = len(log)
    column = reader.encode(state, cells, EncodeContext(table.base_dir, log, cache, row_ids))
    if key is not None:
        problems = stored_problems(log.problems[logged:], row_ids)
        if problems is not None:
            cache.put_column(key, column_arrays(column), problems)
    return column


def column_arrays(column: FeatureColumn) -> dict[str, np.ndarray]:
    arrays = {"values": column.values, "present": column.present}
    return arrays if column.lengths is None else {**arrays, "lengths": column.lengths}


def stored_problems(problems: list[Problem], row_ids: list[int]) -> list[dict] | None:
    """Problems by position among the rows (a later read may number them from another first
    row); None if one names a row outside them."""
    if not problems:
        return []
    position = {row: at for at, row in enumerate(row_ids)}
    if any(problem.row not in position for problem in problems):
        return None
    return [{"at": position[p.row], "path": p.path, "reason": p.reason} for p in problems]


@functools.cache
def encoding_code(kind: str) -> str | None:
    """A digest of the modality's source (its package's files, or its module's) and of the
    shared column code: an encoded column stored by other code (a new release, an edit) is
    never read back. None, and so no encoded columns, for a modality whose source cannot be
    read (one defined in a notebook, say)."""
    module = sys.modules.get(type(modality(kind)).__module__)
    source = getattr(module, "__file__", None)
    if not source:
        return None
    source = Path(source)
    own = sorted(source.parent.glob("*.py")) if source.name == "__init__.py" else [source]
    shared = Path(__file__).parent
    digest = hashlib.sha256()
    for path in own + [shared / "column.py", shared / "files.py"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
