"""The loaded model and what serves it: request folders, timed decoding, the batcher.

Requests' files are written under a private temporary folder with names the server chooses;
the rows of a batch become one `Table` with that folder as base_dir and go through
`Model.encode` and `Model.forward`, exactly as `Model.predict` reads a table. Decoding runs
on a small thread pool with a time limit; forward passes run on the batcher's model thread.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import torch

from polymodal.data.cache import FeatureCache
from polymodal.data.problems import BadInputError, DecodeError, ProblemLog
from polymodal.data.table import Table
from polymodal.modalities import modality
from polymodal.model import Model
from polymodal.search.embeddings import embed_query
from polymodal.serving.batching import Features, Job, MicroBatcher
from polymodal.serving.errors import ApiError
from polymodal.serving.inputs import Row, Upload, input_fields
from polymodal.serving.metrics import Metrics
from polymodal.serving.schemas import (
    SAMPLING_NAMES,
    InputField,
    InputWarning,
    SamplingSettings,
    TargetPrediction,
)
from polymodal.serving.search import SearchIndex
from polymodal.serving.settings import ServeSettings

log = logging.getLogger("polymodal.serving")
Outputs = dict[str, np.ndarray]
Predictions = list[dict[str, TargetPrediction]]  # per row: target → its prediction
T = TypeVar("T")
PIPELINE = 2  # batches in flight: one decoding while the one before runs the model


@dataclass
class Encoded:
    """Features for some rows, and the problems the decoders logged (rows 0-based)."""

    features: Features
    problems: ProblemLog


class Service:
    """Everything a request handler needs, built once in the app's lifespan."""

    def __init__(self, settings: ServeSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        # No on-disk feature cache: uploads are one-off, and a client must not fill the disk.
        self.model = Model.load(settings.model_dir, cache=FeatureCache(enabled=False))
        self.fields: list[InputField] = input_fields(self.model.schema_)
        self.source_of = {
            name: field.name for field in self.fields for name in field.inputs
        }  # input → request column
        self.lenient_inputs = {
            state.column for state in self.model.schema_.inputs if modality(state.kind).lenient
        }  # inputs whose problems (unknown categories) are warnings
        self.search: SearchIndex | None = None
        if settings.index_dir is not None:  # a wrong index stops the server from starting
            self.search = SearchIndex(settings.index_dir, settings.model_dir, self.model)
        self.folder = Path(tempfile.mkdtemp(prefix="polymodal-serve-"))  # mode 0700
        self.decoders = ThreadPoolExecutor(
            max_workers=settings.decode_threads, thread_name_prefix="polymodal-decode"
        )
        self.batcher = MicroBatcher(
            self.process,
            max_batch=settings.batch_limit,
            max_wait_s=settings.batch_wait_s,
            concurrency=PIPELINE,
        )

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        self.decoders.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    # -------------------------------------------------------------- predicting
    async def predict(self, rows: list[Row]) -> tuple[Predictions, list[InputWarning]]:
        """Predictions for the rows, decoded and run with whatever else is waiting."""
        return await self.batcher.submit(rows, len(rows))

    async def process(self, batch: list[Job]) -> None:
        """Decode a batch's rows as one table, then run the rows whose inputs are good."""
        rows = [row for job in batch for row in job.payload]
        try:
            encoded = await self.encode(rows)
        except ApiError:
            if len(batch) == 1:
                raise
            # Someone's file was too slow or odd: retry each request alone, so only its own
            # sender gets the error.
            await asyncio.gather(*(self.process([job]) for job in batch))
            return
        starts = np.cumsum([0] + [job.rows for job in batch])
        errors, warnings = self.sort_problems(encoded.problems, starts)
        good = []
        for index, job in enumerate(batch):
            if index not in errors:
                good.append(index)
            elif not job.future.done():
                job.future.set_exception(errors[index])
        if not good:
            return
        features = encoded.features
        if len(good) < len(batch):
            keep = torch.cat([torch.arange(starts[i], starts[i + 1]) for i in good])
            features = {n: {k: v[keep] for k, v in item.items()} for n, item in features.items()}
        started = time.perf_counter()
        sizes = [batch[index].rows for index in good]
        parts = await self.batcher.in_model_thread(self.predict_now, features, sizes)
        self.metrics.observe_batch(sum(sizes), time.perf_counter() - started)
        for index, part in zip(good, parts, strict=True):
            if not batch[index].future.done():
                batch[index].future.set_result((part, warnings[index]))

    def predict_now(self, features: Features, sizes: list[int]) -> list[Predictions]:
        """One forward pass over a batch, then each request's predictions (of `sizes` rows),
        on the model thread: the decoding settings that predictions read (an image's
        provenance mark) change only there, while a generate request samples."""
        outputs = self.model.forward(features)
        parts, start = [], 0
        for size in sizes:
            parts.append(self.predictions({n: v[start : start + size] for n, v in outputs.items()}))
            start += size
        return parts

    def sort_problems(
        self, problems: ProblemLog, starts: np.ndarray
    ) -> tuple[dict[int, ApiError], dict[int, list[InputWarning]]]:
        """Per request: its first bad value (a 422 naming the column) and its warnings."""
        errors: dict[int, ApiError] = {}
        warnings: dict[int, list[InputWarning]] = {i: [] for i in range(len(starts) - 1)}
        for problem in problems.problems:
            index = int(np.searchsorted(starts, problem.row, side="right")) - 1
            row = problem.row - int(starts[index])
            column = self.source_of.get(problem.column, problem.column)
            if problem.column in self.lenient_inputs:
                warnings[index].append(InputWarning(row=row, column=column, message=problem.reason))
            elif index not in errors:
                message = f"row {row}, column '{column}': {problem.reason}"
                errors[index] = ApiError(422, message, column=column, row=row)
        return errors, warnings

    async def encode_request(self, rows: list[Row]) -> tuple[Features, list[InputWarning]]:
        """One request's features on its own (explanations), or its first error."""
        encoded = await self.encode(rows)
        errors, warnings = self.sort_problems(encoded.problems, np.array([0, len(rows)]))
        if errors:
            raise errors[0]
        return encoded.features, warnings[0]

    # ---------------------------------------------------------------- decoding
    async def encode(self, rows: list[Row]) -> Encoded:
        """Features for the rows, decoded on the pool within the time limit."""
        return await self.decode(self.encode_now, rows)

    async def decode(self, work: Callable[..., T], *args: object) -> T:
        """`work(*args, started)` on the decoding pool, within the time limit."""
        started = threading.Event()
        job = self.decoders.submit(work, *args, started)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job), self.settings.decode_timeout_s)
        except TimeoutError:
            job.cancel()
            limit = self.settings.decode_timeout_s
            if started.is_set():
                raise ApiError(
                    422, f"decoding the request's files took longer than {limit:g} s"
                ) from None
            raise ApiError(503, f"server busy: decoding did not start within {limit:g} s") from None

    def encode_now(self, rows: list[Row], started: threading.Event) -> Encoded:
        started.set()
        with self.request_folder() as folder:
            table = self.request_table(rows, folder)
            problems = ProblemLog(table="request")
            return Encoded(self.model.encode(table, problems), problems)

    @contextmanager
    def request_folder(self) -> Iterator[Path]:
        """A private folder for one request's files, removed after; the model's refusals of
        its values become 422s."""
        folder = Path(tempfile.mkdtemp(dir=self.folder))
        try:
            yield folder
        except (BadInputError, DecodeError) as error:
            raise ApiError(422, str(error)) from None
        except (ValueError, TypeError, OverflowError) as error:
            log.warning("could not encode a request", exc_info=True)
            raise ApiError(422, f"could not read the request's values ({error})") from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------ embedding and search
    async def embed(self, rows: list[Row], column: str) -> tuple[np.ndarray, list[InputWarning]]:
        """`Model.embed` of the rows for one input (NaN rows: no value there), decoded on the
        pool within the time limit; the rows' first bad value is a 422, as for predictions."""
        vectors, problems = await self.decode(self.embed_now, rows, column)
        errors, warnings = self.sort_problems(problems, np.array([0, len(rows)]))
        if errors:
            raise errors[0]
        return vectors, warnings[0]

    def embed_now(
        self, rows: list[Row], column: str, started: threading.Event
    ) -> tuple[np.ndarray, ProblemLog]:
        started.set()
        with self.request_folder() as folder:
            problems = ProblemLog(table="request")
            vectors = self.model.embed(self.request_table(rows, folder), column, problems)
            return vectors, problems

    async def embed_query(self, column: str, value: str | Upload) -> np.ndarray:
        """A search query's vector: a text, or uploaded bytes written under a name the server
        chooses (never a path from the request), embedded as `polymodal search` does."""
        return await self.decode(self.embed_query_now, column, value)

    def embed_query_now(
        self, column: str, value: str | Upload, started: threading.Event
    ) -> np.ndarray:
        started.set()
        with self.request_folder() as folder:
            if isinstance(value, Upload):
                (folder / f"query.{value.kind}").write_bytes(value.data)
                return embed_query(self.model, column, f"query.{value.kind}", folder)
            return embed_query(self.model, column, value)

    def request_table(self, rows: list[Row], folder: Path) -> Table:
        """Uploads written under server-chosen names; cells hold those names, relative to folder."""
        columns: dict[str, list] = {field.name: [] for field in self.fields}
        for index, row in enumerate(rows):
            for number, field in enumerate(self.fields):
                value = row.get(field.name)
                if isinstance(value, Upload):
                    name = f"{index}-{number}.{value.kind}"
                    (folder / name).write_bytes(value.data)
                    value = name
                columns[field.name].append(value)
        frame = pd.DataFrame(
            {name: pd.Series(cells, dtype=object) for name, cells in columns.items()}
        )
        return Table(frame, folder, "request")

    # ----------------------------------------------------------------- outputs
    def predictions(self, outputs: Outputs, targets: list[str] | None = None) -> Predictions:
        """Raw outputs → per row, per target (None: every one): the prediction and class
        probabilities."""
        rows = len(next(iter(outputs.values())))
        result: Predictions = [{} for _ in range(rows)]
        for name, decoded in self.model.decode(outputs).items():
            if targets is not None and name not in targets:
                continue
            task = self.model.task(name)
            for row in range(rows):
                result[row][name] = task.prediction(decoded, row)
        return result

    # -------------------------------------------------------------- generating
    @property
    def generated_targets(self) -> list[str]:
        """The targets whose task makes media (`Task.generates`): what /v1/generate samples."""
        return [
            state.column
            for state in self.model.schema_.targets
            if self.model.task(state.column).generates
        ]

    async def generate(
        self, rows: list[Row], settings: SamplingSettings
    ) -> tuple[list[Predictions], dict[str, dict[str, float | int]], list[InputWarning]]:
        """Each row's `settings.samples` samples of every generated target, with the settings
        used and the rows' warnings. The rows are decoded once and repeated; the samples run
        alone (never batched with other requests: a sample depends on its seed and its place
        in the request only), on the model thread."""
        features, warnings = await self.encode_request(rows)
        copies = settings.samples
        repeated = {
            name: {key: value.repeat_interleave(copies, dim=0) for key, value in item.items()}
            for name, item in features.items()
        }
        made, used = await self.batcher.in_model_thread(
            self.generate_now, repeated, settings.decoding()
        )
        return [made[i * copies : (i + 1) * copies] for i in range(len(rows))], used, warnings

    def generate_now(
        self, features: Features, decoding: dict[str, float | int]
    ) -> tuple[Predictions, dict[str, dict[str, float | int]]]:
        """Sample with this request's settings and the model's own back after: run on the
        model thread, where every other forward pass and prediction runs, so no other
        request ever sees them."""
        targets = self.generated_targets
        try:
            with self.model.decoding(**decoding):
                outputs = self.model.forward(features)  # rows numbered from 0
                return self.predictions(outputs, targets), self.sampling_of(targets)
        except BadInputError as error:  # a setting these targets do not take
            raise ApiError(422, str(error)) from None

    def sampling_of(self, targets: list[str]) -> dict[str, dict[str, float | int]]:
        """Each target's sampling settings now (those named in `SAMPLING_NAMES` it has)."""
        return {
            name: {
                key: value
                for key, value in self.model.task(name).state.options.items()
                if key in SAMPLING_NAMES
            }
            for name in targets
        }
