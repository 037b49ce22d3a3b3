"""The vector index a server searches (`polymodal serve MODEL --index DB`).

The index must have been made from the served model (its `source.json` names the model
folder): otherwise queries would be embedded by one model and compared with another's
vectors, so the server refuses to start. Requests name stored rows only by their integer id;
a stored file is found from that row's cell, never from a path a request gives.
"""

from __future__ import annotations

import math
import mimetypes
from pathlib import Path

import numpy as np
import pandas as pd

from polymodal.data.problems import BadInputError
from polymodal.data.sniff import sniff_file
from polymodal.modalities import modality
from polymodal.model import Model
from polymodal.search.embeddings import (
    QUERY_KINDS,
    IndexSource,
    hit_records,
    open_index,
    read_source,
)
from polymodal.search.index import Index
from polymodal.serving.errors import ApiError
from polymodal.serving.schemas import SearchHit, SearchInfo

MAX_K = 100
MAX_WHERE = 2000  # characters of a where filter
FILE_URL = "/v1/search/items/{id}/file"


def open_search_index(index_dir: Path, model_dir: Path) -> tuple[Index, IndexSource]:
    """The index in `index_dir` and its source, checked to be of the model in `model_dir`."""
    source = read_source(index_dir)
    if Path(source.model).resolve() != model_dir.resolve():
        raise BadInputError(
            f"--index {index_dir} holds vectors of model {source.model}, not of the model "
            f"served ({model_dir.resolve()}): serve that model, or index with this one"
        )
    return open_index(index_dir), source


class SearchIndex:
    """The opened index with what its answers need: the source, the model's input kinds."""

    def __init__(self, index_dir: Path, model_dir: Path, model: Model) -> None:
        self.index, self.source = open_search_index(index_dir, model_dir)
        self.kinds = model.schema_.kinds
        self.files = modality(self.source.kind).files
        self.by_class = model.class_vectors(self.source.column) is not None

    def info(self) -> SearchInfo:
        fits = [
            kind
            for kind, accepted in QUERY_KINDS.items()
            if any(k in accepted for k in self.kinds.values())
        ]
        return SearchInfo(
            column=self.source.column,
            kind=self.source.kind,
            rows=len(self.index),
            metric=self.index.settings.metric,
            files=self.files,
            preview=modality(self.source.kind).widget.preview,
            query_kinds=fits,
            max_k=MAX_K,
            by_class=self.by_class,
        )

    def hits(self, found: pd.DataFrame) -> list[SearchHit]:
        """Search hits as the response lists them: rank, score, id, metadata, file_url."""
        hits = []
        for record in hit_records(found):
            rank, score, id_ = record.pop("rank"), record.pop("score"), int(record.pop("id"))
            metadata = {name: json_value(value) for name, value in record.items()}
            file_url = None
            if self.files and self.source.stored_file(id_, record) is not None:
                file_url = FILE_URL.format(id=id_)
            hits.append(
                SearchHit(
                    rank=rank, score=float(score), id=id_, metadata=metadata, file_url=file_url
                )
            )
        return hits

    def stored_file(self, id_: int) -> tuple[Path, str]:
        """The file of the stored row `id_` and its media type; 404 when there is none. Blocking
        (reads the index and the disk): call it off the event loop."""
        found = self.index.rows([id_])
        if found.empty:
            raise ApiError(404, f"the index holds no item {id_}")
        if not self.files:
            raise ApiError(404, f"the index holds {self.source.kind} vectors, not files")
        path = self.source.stored_file(id_, found.iloc[0].to_dict())
        if path is None:
            raise ApiError(404, f"item {id_} names no file the server can find")
        if not path.is_file():
            raise ApiError(404, f"the file of item {id_} is no longer there")
        if sniff_file(path) not in modality(self.source.kind).sniffed:
            raise ApiError(404, f"the file of item {id_} is not a {self.source.kind} file")
        media_type, _ = mimetypes.guess_type(path.name)
        return path, media_type or "application/octet-stream"


def json_value(value: object) -> object:
    """A metadata value JSON can hold: numbers and strings as they are, NaN as null, anything
    else (a timestamp, bytes) as its text."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
