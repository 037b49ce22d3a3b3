"""`polymodal predict` for tables of any size: read in chunks, write and flush as it goes.

The output is a CSV whose first column `row` is the input's 0-based row index. Each chunk's
rows are appended and flushed before the next is read, so an interrupted run leaves every
finished row on disk; `resume` drops a partly written last line, reads the last complete
row and skips that many input rows, so no row is predicted or written twice.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from polymodal.data.problems import BadInputError, Problem
from polymodal.data.table import Table, read_tables
from polymodal.model import Model
from polymodal.progress import progress_enabled
from polymodal.training.distributed import environment

ROW = "row"
SCAN_BLOCK = 1 << 20


@dataclass
class BatchResult:
    written: int = 0  # rows predicted in this run
    skipped: int = 0  # rows already in the output (resume)
    problems: list[Problem] = field(default_factory=list)


def output_header(model: Model) -> list[str]:
    """The output's columns: `row`, then each target's prediction and probability columns."""
    header = [ROW]
    for task in model.net_.tasks:
        empty = task.decode(np.zeros((0, *task.output_shape), np.float32))
        header += list(task.columns(empty))
    return header


def predict_to_csv(
    model: Model,
    data: Path,
    output: Path,
    *,
    chunk_size: int = 1000,
    resume: bool = False,
    overwrite: bool = False,
    console: Console | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> BatchResult:
    """Predict every row of `data` into `output`, chunk by chunk (see the module docstring)."""
    done = open_output(output_header(model), data, output, resume=resume, overwrite=overwrite)
    base_dir, name = data.parent.resolve(), str(data)
    shards = (
        predict_shard(model, frame, offset, base_dir, name)
        for offset, frame in read_chunks(data, chunk_size, skip=done)
    )
    return write_shards(shards, data, output, done, console, on_chunk)


@dataclass
class Shard:
    """One chunk's predictions: its CSV lines (`row` first) and the problems met in it."""

    rows: int
    text: str
    problems: list[Problem]


def predict_shard(
    model: Model, frame: pd.DataFrame, offset: int, base_dir: Path, name: str
) -> Shard:
    """Rows `offset`, `offset + 1`, ... of table `name` predicted as one batch and formatted
    as output lines; every engine goes through here, so their files match byte for byte."""
    table = Table(frame.reset_index(drop=True), base_dir, name)
    with progress_off():
        features = model.encode(table)
        predictions = model.predictions(features, first_row=offset)
    predictions.insert(0, ROW, np.arange(offset, offset + len(frame)))
    text = predictions.to_csv(header=False, index=False, lineterminator="\n")
    problems = [
        replace(problem, row=problem.row + offset) for problem in features.problems.problems
    ]
    return Shard(len(frame), text, problems)


def open_output(
    header: list[str], data: Path, output: Path, *, resume: bool, overwrite: bool
) -> int:
    """Check the options, write the header of a new output, and return the rows already
    written (resume), so that no row is written twice."""
    if resume and overwrite:
        raise BadInputError("pass --resume or --overwrite, not both")
    if not data.is_file():
        raise BadInputError(f"table {data} does not exist")
    if output.exists() and not (resume or overwrite):
        raise FileExistsError(
            f"{output} exists; pass --overwrite to replace it or --resume to continue it"
        )
    done = resume_point(output, header) if resume and output.exists() else 0
    if not done and (overwrite or not output.exists() or output.stat().st_size == 0):
        output.write_text(",".join(csv_cell(name) for name in header) + "\n", encoding="utf-8")
    return done


def write_shards(
    shards: Iterable[Shard],
    data: Path,
    output: Path,
    done: int,
    console: Console | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> BatchResult:
    """Append each shard, in order, flushed and synced before the next: a kill at any time
    leaves whole rows on disk (at most a cut last line, which `resume_point` drops)."""
    result = BatchResult(skipped=done)
    with (
        open(output, "a", encoding="utf-8", newline="") as handle,
        chunk_progress(count_rows(data), done, console) as advance,
    ):
        for shard in shards:
            handle.write(shard.text)
            handle.flush()
            os.fsync(handle.fileno())
            result.written += shard.rows
            result.problems += shard.problems
            advance(shard.rows)
            if on_chunk:
                on_chunk(result.written)
    return result


def csv_cell(text: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([text])
    return buffer.getvalue()


# ------------------------------------------------------------------- resume
def resume_point(output: Path, header: list[str]) -> int:
    """Rows already complete in `output`, after cutting a partly written last record."""
    end, last_start = complete_records_end(output)
    with open(output, "r+b") as handle:
        handle.truncate(end)
    if end == 0:
        return 0
    with open(output, encoding="utf-8", errors="replace", newline="") as handle:
        found = next(csv.reader(handle), [])
    if found != header:
        raise BadInputError(
            f"{output} has other columns than this model writes; pass --overwrite to replace it"
        )
    if last_start == 0:  # only the header
        return 0
    with open(output, "rb") as handle:
        handle.seek(last_start)
        last = next(csv.reader(io.StringIO(handle.read().decode("utf-8", errors="replace"))), [])
    try:
        return int(last[0]) + 1
    except (IndexError, ValueError):
        raise BadInputError(
            f"{output}: its last line has no row number; pass --overwrite"
        ) from None


def complete_records_end(path: Path) -> tuple[int, int]:
    """(end of the last complete CSV record, start of that record), in bytes.

    A record ends at a newline outside quotes; quotes are counted from the start, so a
    quoted value holding a newline is never cut in two.
    """
    in_quotes = False
    position = end = previous_end = 0
    with open(path, "rb") as handle:
        while block := handle.read(SCAN_BLOCK):
            for match in re.finditer(rb'["\n]', block):
                if match[0] == b'"':
                    in_quotes = not in_quotes
                elif not in_quotes:
                    previous_end, end = end, position + match.start() + 1
            position += len(block)
    return end, previous_end


# ------------------------------------------------------------------- reading
def read_chunks(path: Path, size: int, skip: int = 0) -> Iterator[tuple[int, pd.DataFrame]]:
    """(offset of the first row, frame) per chunk, from row `skip` on, as `read_tables` reads."""
    for table in read_tables(path, chunk_rows=size):
        start, frame = table.first_row, table.frame
        if start + len(frame) <= skip:
            continue
        if start < skip:
            frame, start = frame.iloc[skip - start :], skip
        yield start, frame


def count_rows(path: Path) -> int | None:
    """Rows in the table, for the progress bar: Parquet metadata, else a quick pass."""
    suffix = "".join(path.suffixes[-2:]).lower()
    try:
        if suffix.endswith((".parquet", ".pq")):
            return pq.ParquetFile(path).metadata.num_rows
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            if suffix.endswith((".jsonl", ".ndjson")):
                return sum(1 for line in handle if line.strip())
            if suffix.endswith(".json"):
                return None
            delimiter = "\t" if suffix.endswith(".tsv") else ","
            return max(0, sum(1 for _ in csv.reader(handle, delimiter=delimiter)) - 1)
    except (OSError, csv.Error, ValueError):
        return None


# ------------------------------------------------------------------ progress
@contextmanager
def chunk_progress(
    total: int | None, done: int, console: Console | None
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over rows (on a terminal); yields `advance(rows)`."""
    if not progress_enabled():
        yield lambda _rows: None
        return
    columns = (
        TextColumn("predict"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console or Console(stderr=True), transient=True) as progress:
        task = progress.add_task("predict", total=total, completed=done)
        yield lambda rows: progress.advance(task, rows)


def progress_off() -> AbstractContextManager[None]:
    """Silence the per-column decode bars while the chunk bar is drawn (one live display)."""
    return environment("POLYMODAL_PROGRESS", "0")
