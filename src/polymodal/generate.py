"""`polymodal generate`: K samples of a model's generated targets per row of a conditions table,
written as a table in the training table's schema (so it can be appended to a training set).

The conditions' columns are kept as given, except that file paths of the model's file inputs
are rewritten relative to the output folder (where the new table lives); each generated
target's column holds its file's path (PNG, MIDI) relative to that folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from polymodal.data.column import is_missing
from polymodal.data.files import path_text
from polymodal.data.problems import BadInputError
from polymodal.data.table import Table, read_table
from polymodal.modalities import modality
from polymodal.model import Model

GENERATED_TABLE = "generated.csv"
# The decoding setting naming where a generated-file target writes, and the folder used here
# (and, after the output's name, by `polymodal predict`).
FILE_FOLDERS = {"image_dir": "images", "music_dir": "music"}
CHUNK_ROWS = 1000


def generate(
    model: Model, conditions: str | Path, out: str | Path, samples: int = 1, **sampling: object
) -> tuple[Path, int]:
    """Write `samples` samples per row of `conditions` under `out` (PNGs in out/images, MIDI
    in out/music) and out/generated.csv; `sampling`: guidance, steps, seed, ... (None: as the
    model has them). Returns the table's path and its rows."""
    if samples < 1:
        raise BadInputError(f"-n must be at least 1 (given {samples})")
    folders = {key: name for key, name in FILE_FOLDERS.items() if key in model.decoding_settings()}
    if not folders:
        raise BadInputError("this model has no generated image or music target to sample")
    out = Path(out).resolve()
    if (out / GENERATED_TABLE).exists():
        raise FileExistsError(f"{out / GENERATED_TABLE} exists: choose another --out folder")
    table = read_table(conditions)
    repeated = table.frame.loc[np.repeat(table.frame.index.to_numpy(), samples)]
    repeated = repeated.reset_index(drop=True)
    folders = {key: str(out / name) for key, name in folders.items()}
    model.set_decoding(**sampling, **folders, relative_to=str(out))
    written = []
    for start in range(0, len(repeated), CHUNK_ROWS):
        chunk = Table(repeated.iloc[start : start + CHUNK_ROWS], table.base_dir, table.name)
        written.append(model.predictions(model.encode(chunk), first_row=start))
    predicted = pd.concat(written, ignore_index=True) if written else pd.DataFrame()
    result = with_paths_from(repeated, model, table.base_dir, out)
    for task in model.net_.tasks:
        if set(FILE_FOLDERS) & set(task.decoding):
            column = task.state.column
            result[column] = predicted[f"{column}_predicted"].to_numpy()
    result.to_csv(out / GENERATED_TABLE, index=False)
    return out / GENERATED_TABLE, len(result)


def with_paths_from(frame: pd.DataFrame, model: Model, base_dir: Path, out: Path) -> pd.DataFrame:
    """`frame` with the model's file inputs' paths made relative to `out` (they were relative
    to the conditions table's folder)."""
    frame = frame.copy()
    for state in model.schema_.inputs:
        if modality(state.kind).files and state.source in frame.columns:
            frame[state.source] = [
                cell if is_missing(cell) else os.path.relpath(path_text(cell, base_dir), out)
                for cell in frame[state.source].tolist()
            ]
    return frame
