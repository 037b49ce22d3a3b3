"""From a trained model to vectors on disk and back: `polymodal embed`, `index` and `search`.

A row's vector is `Model.embed(table, column)`: the fused representation the heads read, with
only that column present. An index remembers in `source.json` which model and column made
its vectors, so `search` embeds a query the same way without being told again, and `--append`
cannot mix in vectors of another model or column, which would be compared as if they were
alike. A query of another modality than the indexed column is embedded through that
modality's input of the same model. A `match` target over both columns trains the two into
one space (`Model.embed` then returns that space's vectors); without one, such a search ranks
by what the heads happen to share, and `polymodal search` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from polymodal.config import Strict
from polymodal.data.files import resolve_path
from polymodal.data.problems import BadInputError, ProblemLog
from polymodal.data.table import Table, read_table
from polymodal.modalities import modality, query_kinds
from polymodal.model import Model
from polymodal.search.index import RESERVED, Index, Metric, metadata_table
from polymodal.version import __version__

SOURCE_FILE = "source.json"
ROW = "row"  # the 0-based input row, stored with every vector
# The query options and the input kinds each can fill (the modalities' `query`): a typed
# string fills text and category inputs.
QUERY_KINDS = query_kinds()


class IndexedTable(Strict):
    """A table whose rows went into an index: its folder, against which its relative file
    paths resolve, and the first id its rows got (the ids up to the next table's are its)."""

    first_id: int
    folder: str  # absolute


class IndexSource(Strict):
    """What `source.json` beside an index says: the model and column its vectors came from,
    and the tables indexed (older indexes have none listed: their relative paths are unknown)."""

    model: str  # the model folder, absolute, so `search` finds it from any folder
    column: str
    kind: str
    polymodal_version: str = __version__
    tables: list[IndexedTable] = []

    def folder_of(self, id_: int) -> Path | None:
        """The folder of the table the row with this id came from (None: not recorded)."""
        folders = [Path(t.folder) for t in self.tables if t.first_id <= id_]
        return folders[-1] if folders else None

    def stored_file(self, id_: int, metadata: dict) -> Path | None:
        """The file the row's indexed cell names, resolved as `polymodal index` read it;
        None for a text index, an empty cell, or a relative path of an unrecorded table."""
        cell = metadata.get(stored_name(self.column))
        if not modality(self.kind).files or cell is None or not str(cell).strip():
            return None
        if Path(str(cell).strip()).expanduser().is_absolute():
            return resolve_path(cell, Path("/"))
        folder = self.folder_of(id_)
        return resolve_path(cell, folder) if folder is not None else None


@dataclass
class Embedded:
    """The rows that got a vector, with their metadata (`row` and the table's columns); rows
    whose column was missing or undecodable are only counted, and their problems logged."""

    vectors: np.ndarray  # float32 [rows, dim]
    metadata: pd.DataFrame
    skipped: int
    problems: ProblemLog
    folder: Path | None = None  # the table's folder, against which its file paths resolve


@dataclass
class QueryClass:
    """The class a search by class put in place of its query."""

    name: str
    similarity: float  # the query's cosine similarity to the class's vector


@dataclass
class SearchResult:
    hits: pd.DataFrame  # id, score, then the metadata, best first
    source: IndexSource  # what the index holds
    query_column: str  # the model input the query was embedded through
    model: Model  # the model that made the index and embedded the query
    query: np.ndarray  # the vector searched [dim]: the query's, or by class its class's
    metric: str  # how the index compares vectors
    query_class: QueryClass | None = None  # by class: the class searched for


# ------------------------------------------------------------------------ embedding rows
def embed_rows(model: Model, data: str | Path, column: str) -> Embedded:
    """Every row's vector of `column`, the rows without one left out (they would be NaN)."""
    table = read_table(data)
    log = ProblemLog(table=table.name)
    return kept_rows(table, model.embed(table, column=column, log=log), log)


def kept_rows(table: Table, vectors: np.ndarray, log: ProblemLog) -> Embedded:
    """The rows of `table` whose vector is whole, with their metadata; the others counted."""
    kept = np.isfinite(vectors).all(axis=1)
    metadata = metadata_frame(table.frame).loc[kept].reset_index(drop=True)
    return Embedded(vectors[kept], metadata, int((~kept).sum()), log, table.base_dir)


def metadata_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """`row` then the table's columns; a column whose name the index keeps for itself (id,
    vector, score, row, or starting with '_') is stored as `table_<name>`."""
    names = {name: stored_name(str(name)) for name in frame.columns}
    renamed = frame.rename(columns=names)
    renamed.insert(0, ROW, np.arange(len(frame), dtype=np.int64))
    return renamed


def stored_name(name: str) -> str:
    return f"table_{name}" if name in (*RESERVED, ROW) or name.startswith("_") else name


def write_vectors(embedded: Embedded, output: Path) -> None:
    """A Parquet file: `row`, the metadata columns, then `vector` (list<float32>)."""
    columns = metadata_table(embedded.metadata, len(embedded.vectors))
    vectors = embedded.vectors.astype(np.float32)
    rows, dim = vectors.shape
    offsets = pa.array(np.arange(0, rows * dim + 1, dim, dtype=np.int32))
    array = pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1)))
    output.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(columns.append_column("vector", array), output)


# ------------------------------------------------------------------------ the index
def index_source(model: Model, model_dir: Path, column: str) -> IndexSource:
    """The source of an index of `column` (which must be one of the model's inputs)."""
    kinds = model.schema_.kinds
    if column not in kinds:
        raise BadInputError(f"no input named {column!r}; the model's inputs: {described(kinds)}")
    return IndexSource(model=str(model_dir.resolve()), column=column, kind=kinds[column])


def check_destination(db: Path, source: IndexSource, append: bool) -> bool:
    """Whether `db` already holds an index to add to. Refused: an existing folder without
    `append` (nothing is added to or replaced silently), and one made from another model or
    column (its vectors would not compare with these)."""
    if db.exists() and not db.is_dir():
        raise BadInputError(f"--db {db} is a file, not a folder")
    if not (db.exists() and any(db.iterdir())):
        return False
    if not append:
        raise FileExistsError(
            f"{db} exists and is not empty; pass --append to add rows to the index there, "
            "or choose another folder"
        )
    found = read_source(db)
    if (found.model, found.column) != (source.model, source.column):
        raise BadInputError(
            f"{db} holds vectors of column {found.column!r} from model {found.model}; "
            f"--append adds only vectors of the same model and column, not {source.column!r} "
            f"from {source.model}"
        )
    return True


def build_index(
    model: Model, source: IndexSource, data: str | Path, db: Path, metric: str | None, append: bool
) -> Embedded:
    """Embed every row of `data` and add the vectors to the index in `db` (a new one, or with
    `append` the one there). Checks the destination before the slow embedding."""
    if metric is not None and metric not in get_args(Metric):
        raise BadInputError(f"--metric {metric!r}: choose one of {', '.join(get_args(Metric))}")
    index = open_index(db) if check_destination(db, source, append) else None
    if index is not None and metric is not None and metric != index.settings.metric:
        raise BadInputError(f"{db} compares by {index.settings.metric}, not {metric}")
    embedded = embed_rows(model, data, source.column)
    if index is None:
        index = Index.create(db, model.config.model.dim, metric=metric or "cosine")
        write_source(db, source)
    else:
        source = read_source(db)  # the tables indexed before
    first_id = index.settings.next_id
    try:
        index.add(embedded.vectors, embedded.metadata)
    except ValueError as error:  # metadata columns that do not fit the ones stored
        raise BadInputError(f"{db}: {error}") from None
    folder = str(embedded.folder.resolve()) if embedded.folder is not None else None
    if folder is not None and (not source.tables or source.tables[-1].folder != folder):
        table = IndexedTable(first_id=first_id, folder=folder)
        write_source(db, source.model_copy(update={"tables": [*source.tables, table]}))
    return embedded


def write_source(db: Path, source: IndexSource) -> None:
    (db / SOURCE_FILE).write_text(source.model_dump_json(indent=2) + "\n")


def read_source(db: Path) -> IndexSource:
    path = db / SOURCE_FILE
    if not path.is_file():
        raise BadInputError(f"{db} was not made by `polymodal index`: {SOURCE_FILE} is missing")
    return IndexSource.model_validate_json(path.read_text())


def open_index(db: Path) -> Index:
    try:
        return Index.open(db)
    except (FileNotFoundError, ValueError) as error:
        raise BadInputError(str(error)) from None


# ------------------------------------------------------------------------ searching
def search_index(
    db: Path,
    query_kind: str,
    value: str,
    k: int = 10,
    where: str | None = None,
    query_column: str | None = None,
    by_class: bool = False,
) -> SearchResult:
    """The `k` rows of the index in `db` nearest to one query (a text, or a file's path),
    embedded through the model input of the query's kind with every other input empty.
    `by_class`: nearest to the vector of the query's class instead (`class_query`)."""
    source = read_source(db)
    index = open_index(db)
    model = Model.load(source.model)
    column = query_input(model.schema_.kinds, query_kind, source.column, query_column)
    vector = embed_query(model, column, value)
    named = None
    if by_class:
        vector, named = class_query(model, column, vector)
    hits = nearest(index, vector, k, where)
    return SearchResult(hits, source, column, model, vector, index.settings.metric, named)


def class_query(model: Model, column: str, vector: np.ndarray) -> tuple[np.ndarray, QueryClass]:
    """The vector of the class nearest to a query of `column`, to search with in its place.

    Why: in a space trained by class (`--match a=b --positive-by label`), the stored items
    nearest a class's vector are the ones its tower is surest belong to that class, while
    the items nearest one query are often ones its tower placed in the wrong class; so for
    "items of the class this query shows" (class-level precision), searching with the
    class's vector ranks better (BENCHMARKS.md, AV-MNIST). What it gives up: every top hit
    is of the one class named, and nothing of what sets this query apart from others of
    its class is used, so a query the tower misclassifies gets no right hit at all.
    """
    found = model.class_vectors(column)
    if found is None:
        raise BadInputError(
            f"a search by class needs a model that learned a vector per class for input "
            f"{column!r}: train it with --match {column}=OTHER --positive-by CLASS_COLUMN"
        )
    names, vectors = found
    similarity = vectors @ (vector / np.linalg.norm(vector))
    best = int(similarity.argmax())
    return vectors[best], QueryClass(names[best], float(similarity[best]))


class BadFilterError(BadInputError):
    """A search LanceDB refused, mostly for its `where` filter."""


def nearest(index: Index, vector: np.ndarray, k: int, where: str | None) -> pd.DataFrame:
    """The `k` hits nearest to one query vector, best first; a bad filter is a BadFilterError."""
    try:
        return index.search(vector, k=k, where=where)[0]
    except (ValueError, RuntimeError, OSError) as error:  # LanceDB's words for a bad filter
        hint = f" (check --where {where!r})" if where else ""
        raise BadFilterError(f"search failed{hint}: {error}") from None


def query_input(
    kinds: dict[str, str], query_kind: str, indexed: str, chosen: str | None = None
) -> str:
    """The model input a query of `query_kind` fills: `chosen` if given; else the indexed
    column if the query can fill it (a search within one modality); else the only input the
    query can fill. Several candidates and no choice is an error, not a guess."""
    fits = [name for name, kind in kinds.items() if kind in QUERY_KINDS[query_kind]]
    if chosen is not None:
        if chosen not in fits:
            raise BadInputError(
                f"--query-column {chosen!r}: a --{query_kind} query fills one of "
                f"{fits or 'no input'}; the model's inputs: {described(kinds)}"
            )
        return chosen
    if indexed in fits:
        return indexed
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise BadInputError(
            f"the model has no {'/'.join(QUERY_KINDS[query_kind])} input for a --{query_kind} "
            f"query; its inputs: {described(kinds)}"
        )
    raise BadInputError(
        f"several inputs take a --{query_kind} query ({', '.join(fits)}): "
        "choose one with --query-column"
    )


def embed_query(model: Model, column: str, value: str, folder: Path | None = None) -> np.ndarray:
    """The query's vector [dim]: a one-row table with the query in `column`'s source column
    (a file as the absolute path typed, read like any table's file; with `folder`, `value`
    names a file in it, as the server writes an upload under a name of its own). An
    unreadable query is an error naming why (a file in `folder` by its name only)."""
    state = model.schema_.input(column)
    if not modality(state.kind).files or folder is not None:
        cell = value
    else:
        cell = str(Path(value).expanduser().resolve())
    log = ProblemLog()
    frame = pd.DataFrame({state.source: [cell]})
    table = Table(frame, folder) if folder is not None else frame
    vector = model.embed(table, column=column, log=log)[0]
    if not np.isfinite(vector).all():
        found = next((p for p in log.problems if p.column == column), None)
        shown = found and found.path and (Path(found.path).name if folder else found.path)
        reason = f"{shown or 'the text'}: {found.reason}" if found else "the query is empty"
        raise BadInputError(f"the query has no vector for input {column!r}: {reason}")
    return vector


def described(kinds: dict[str, str]) -> str:
    return ", ".join(f"{name} ({kind})" for name, kind in kinds.items())


def hit_records(hits: pd.DataFrame) -> list[dict]:
    """Each hit as a JSON-ready dict: rank, score, id, then the metadata (missing: None)."""
    frame = hits.astype(object).where(hits.notna(), None)
    frame.insert(0, "rank", range(1, len(frame) + 1))
    first = ["rank", "score", "id"]
    return frame[first + [name for name in frame.columns if name not in first]].to_dict("records")
