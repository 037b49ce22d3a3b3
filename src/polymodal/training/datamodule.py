"""Preparation apart from training: one process prepares, any number can train.

`prepare` does everything that reads the user's files or learns from the data: it splits
the rows, fits the schema (kinds, tokenizers, vocabularies, scaling, label maps), decodes
every input (through the feature cache) and runs frozen pretrained encoders once, a chunk
of rows at a time, appending each chunk to a folder (schema and config as JSON, arrays as
.npy: `polymodal.data.store`), and `PolymodalDataModule.setup` reads it back: training from a
prepared folder never opens a media file again, and the large arrays of a large table stay
on disk, read a batch of rows at a time, so neither preparing nor training holds a whole
large table's features in memory. Batches come from a standard `DataLoader` over
`PreparedRows` with a batch sampler.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, SubsetRandomSampler

from polymodal.config import Config, TrainSettings
from polymodal.data.cache import FeatureCache
from polymodal.data.features import FittedSchema, encode_inputs, fit_schema
from polymodal.data.files import decoding_workers
from polymodal.data.problems import BadInputError, ProblemLog
from polymodal.data.schema import file_columns, resolve_inputs
from polymodal.data.store import ArrayWriter, DiskArray
from polymodal.data.table import Table, read_table, split_rows
from polymodal.machine import available_memory
from polymodal.tasks import encode_targets
from polymodal.training.batches import take_rows, to_tensors
from polymodal.training.distributed import process_count, process_rank, rows_of_process

PREPARED = "prepared.json"
EVAL_BATCH = 256
CHUNK_ROWS = 8192  # rows decoded and written at a time: bounds the memory preparing takes
IN_MEMORY_BYTES = 4 * 2**20  # a larger input array is read from disk a batch at a time...
PART_IN_MEMORY_BYTES = 256 * 2**20  # ...unless all of its part's input arrays fit in this
Tensors = dict[str, dict[str, torch.Tensor]]
Targets = dict[str, tuple[torch.Tensor, torch.Tensor]]
Embedder = Callable[[FittedSchema, Tensors], Tensors]

# Batches are slices of in-memory tensors (see training.batches): worker processes would only
# add copies, so Lightning's advice to use them does not apply here.
warnings.filterwarnings("ignore", ".*does not have many workers.*")


@dataclass
class Part:
    """The prepared features and targets of every row of one table."""

    inputs: Tensors
    targets: Targets


@dataclass
class Prepared:
    """What preparation produced. `rows` index into `parts`: train and test rows into the
    training table's part, valid rows into the validation table's when one was given."""

    config: Config
    schema: FittedSchema
    parts: dict[str, Part]
    rows: dict[str, np.ndarray]
    valid_part: str = "table"
    table_name: str = ""
    problems: list[dict] = field(default_factory=list)
    embedding_seconds: float = 0.0


def prepare(
    data: str | Path | Table,
    config: Config,
    cache: FeatureCache,
    folder: Path,
    valid: str | Path | Table | None = None,
    embed: Embedder | None = None,
) -> Prepared:
    """Split, fit the schema on the training rows, then decode, embed and write every row to
    `folder` a chunk at a time; returns the folder read back (`load`)."""
    settings = config.train
    table = read_table(data)
    targets = [target.column for target in config.targets]
    kinds = resolve_inputs(table, config, targets)
    splits = split_rows(table, settings.valid_fraction, settings.seed, file_columns(kinds, config))
    if valid is not None:  # a separate validation table: every non-test row trains
        splits["train"] = np.sort(np.concatenate([splits["train"], splits["valid"]]))
    schema = fit_schema(table, splits["train"], config)
    tables = {"table": table}
    if valid is not None:
        tables["valid"] = read_table(valid)
        splits["valid"] = np.arange(len(tables["valid"]))
    valid_part = "valid" if valid is not None else "table"
    part_targets = {name: encode_part_targets(schema, part) for name, part in tables.items()}
    splits["train"] = rows_with_known_target(part_targets["table"], splits["train"])
    if len(splits["train"]) == 0:
        raise BadInputError(f"{table.name}: no training rows with a known target")
    check_scorable(part_targets, splits, valid_part, table.name)  # before any file is decoded
    folder.mkdir(parents=True, exist_ok=True)
    log = ProblemLog(strict=settings.strict, table=table.name)
    seconds, keys = 0.0, {}
    for name, part in tables.items():
        log.table = part.name
        with decoding_workers(settings.workers):
            keys[name], spent = write_part(folder, name, schema, part, log, cache, embed)
        write_targets(folder, name, part_targets[name])
        seconds += spent
    for split, rows in splits.items():
        np.save(folder / f"rows.{split}.npy", rows)
    document = {
        "config": config.model_dump(mode="json"),
        "schema": schema.model_dump(mode="json"),
        "parts": keys,
        "splits": sorted(splits),
        "valid_part": valid_part,
        "table": table.name,
        "problems": log.to_json(),
        "embedding_seconds": seconds,
    }
    (folder / PREPARED).write_text(json.dumps(document, indent=1))  # last: the folder is whole
    prepared = load(folder)
    # the fitted schema itself, not its copy read back: a network built for it while embedding
    # (frozen encoders) holds its task states, which decoding settings and saving must share
    prepared.schema = schema
    return prepared


def write_part(
    folder: Path,
    name: str,
    schema: FittedSchema,
    table: Table,
    log: ProblemLog,
    cache: FeatureCache,
    embed: Embedder | None,
) -> tuple[list[str], float]:
    """Every input of `table`, decoded (and run through frozen encoders) `CHUNK_ROWS` rows at
    a time and appended to one `.npy` file per array, named by position (column names may
    hold any character). Returns the arrays' keys and the seconds spent embedding."""
    writers: dict[str, ArrayWriter] = {}
    seconds = 0.0
    for start in range(0, len(table), CHUNK_ROWS):
        chunk = table.chunk(start, start + CHUNK_ROWS)
        inputs = to_tensors(encode_inputs(schema, chunk, log, cache))
        if embed is not None:
            started = time.perf_counter()
            inputs = embed(schema, inputs)
            seconds += time.perf_counter() - started
        for index, item in enumerate(inputs.values()):
            for key, tensor in item.items():
                entry = f"{index}.{key}"
                if entry not in writers:
                    writers[entry] = ArrayWriter(folder / f"{name}.input{entry}.npy", len(table))
                writers[entry].append(tensor.numpy())
    for writer in writers.values():
        writer.close()
    return sorted(writers), seconds


def encode_part_targets(schema: FittedSchema, table: Table) -> Targets:
    return {
        name: (torch.from_numpy(values), torch.from_numpy(known))
        for name, (values, known) in encode_targets(schema.targets, table).items()
    }


def write_targets(folder: Path, name: str, targets: Targets) -> None:
    for index, (values, known) in enumerate(targets.values()):
        np.save(folder / f"{name}.target{index}.values.npy", values.numpy())
        np.save(folder / f"{name}.target{index}.known.npy", known.numpy())


def check_scorable(
    targets: dict[str, Targets], splits: dict[str, np.ndarray], valid_part: str, table: str
) -> None:
    """Every target must have rows to score in the validation and test parts: a run that
    cannot be scored would otherwise end with a result that means nothing."""
    for split, part in (("valid", targets[valid_part]), ("test", targets["table"])):
        rows = splits.get(split, np.empty(0, dtype=np.int64))
        if split == "test" and not len(rows):
            continue  # no test rows asked for
        for name, (_, known) in part.items():
            if not known.numpy()[rows].any():
                raise BadInputError(
                    f"{table}: none of the {len(rows)} {split} rows has a value of target "
                    f"'{name}' that the model can score (missing, or a class never seen in "
                    "training)"
                )


def rows_with_known_target(targets: Targets, rows: np.ndarray) -> np.ndarray:
    known = np.zeros(len(rows), dtype=bool)
    for _, flags in targets.values():
        known |= flags.numpy()[rows]
    return rows[known]


# ------------------------------------------------------------------------ on disk
def is_prepared(folder: str | Path) -> bool:
    return (Path(folder) / PREPARED).is_file()


def load(folder: str | Path) -> Prepared:
    """A prepared folder, ready to train from; reads no media file. A part (the table, or
    the validation table) whose input arrays fit `part_in_memory_bytes` is read whole. In a
    larger one the large arrays stay on disk and are read a batch of rows at a time
    (`DiskArray`), so memory does not grow with the table; small ones (masks, lengths) are
    read whole."""
    folder = Path(folder)
    if not is_prepared(folder):
        raise BadInputError(f"{folder} is not a prepared folder: {PREPARED} is missing")
    document = json.loads((folder / PREPARED).read_text())
    schema = FittedSchema.model_validate(document["schema"])
    parts = {}
    for part_name, keys in document["parts"].items():
        inputs: Tensors = {state.column: {} for state in schema.inputs}
        names = [state.column for state in schema.inputs]
        arrays = {entry: DiskArray(folder / f"{part_name}.input{entry}.npy") for entry in keys}
        whole = sum(array.nbytes for array in arrays.values()) <= part_in_memory_bytes()
        for entry, array in arrays.items():
            index, key = entry.split(".", 1)
            inputs[names[int(index)]][key] = in_memory_or_on_disk(array, whole)
        targets = {
            state.column: tuple(
                torch.from_numpy(np.load(folder / f"{part_name}.target{i}.{what}.npy"))
                for what in ("values", "known")
            )
            for i, state in enumerate(schema.targets)
        }
        parts[part_name] = Part(inputs, targets)
    rows = {split: np.load(folder / f"rows.{split}.npy") for split in document["splits"]}
    return Prepared(
        Config.model_validate(document["config"]),
        schema,
        parts,
        rows,
        document["valid_part"],
        document["table"],
        document["problems"],
        document["embedding_seconds"],
    )


def part_in_memory_bytes() -> int:
    """How large a part's input arrays may be, all together, to be read into memory whole:
    `PART_IN_MEMORY_BYTES`, or an eighth of the memory still available if that is less.
    Reading them a batch at a time costs one `preadv` per row of a shuffled batch, about 3 %
    of the default AV-MNIST training (measured: 10.4-10.5 s in memory against 10.7-10.9 s)."""
    available = available_memory()
    return PART_IN_MEMORY_BYTES if available is None else min(PART_IN_MEMORY_BYTES, available // 8)


def in_memory_or_on_disk(array: DiskArray, whole_part_fits: bool) -> torch.Tensor | DiskArray:
    """The array read into memory when its part fits or it is small (masks, lengths), else
    left on disk to be read a batch of rows at a time."""
    if not whole_part_fits and array.nbytes > IN_MEMORY_BYTES:
        return array
    array.close()
    return torch.from_numpy(np.load(array.path))


# ---------------------------------------------------------------------- batches
class PreparedRows(torch.utils.data.Dataset):
    """Rows of one prepared part, fetched a whole batch at a time: `dataset[rows]` is one
    tensor slice per array, not one Python call per row."""

    def __init__(self, part: Part) -> None:
        self.part = part

    def __len__(self) -> int:
        return len(next(iter(self.part.inputs.values()))["present"])

    def __getitem__(self, rows: list[int]) -> dict:
        index = torch.as_tensor(rows, dtype=torch.int64)
        inputs = {
            name: {key: take_rows(tensor, index) for key, tensor in item.items()}
            for name, item in self.part.inputs.items()
        }
        targets = {
            name: (take_rows(v, index), take_rows(k, index))
            for name, (v, k) in self.part.targets.items()
        }
        return {"inputs": inputs, "targets": targets}


def batch_loader(
    part: Part, rows: np.ndarray, batch_size: int, shuffle: bool = False, seed: int = 0
) -> DataLoader:
    """A DataLoader whose sampler yields whole batches of `rows` (reshuffled every epoch when
    `shuffle`, from a seeded generator)."""
    rows = np.asarray(rows, dtype=np.int64)
    if shuffle:
        generator = torch.Generator().manual_seed(seed)
        sampler = SubsetRandomSampler(rows.tolist(), generator=generator)
    else:
        sampler = [int(row) for row in rows]
    batches = BatchSampler(sampler, batch_size, drop_last=False)
    # Its own generator: each pass over a loader draws a base seed, which must not come from
    # the global generator that dropout and modality dropout draw from.
    own = torch.Generator().manual_seed(seed)
    return DataLoader(PreparedRows(part), sampler=batches, batch_size=None, generator=own)


class PolymodalDataModule(L.LightningDataModule):
    """Lightning's split of the work: `prepare_data` (one process) prepares `data` into
    `folder` unless it already holds a prepared folder; `setup` (every process) reads it."""

    def __init__(
        self,
        folder: str | Path,
        data: str | Path | Table | None = None,
        *,
        config: Config | None = None,
        valid: str | Path | Table | None = None,
        cache: FeatureCache | None = None,
        embed: Embedder | None = None,
    ) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.data, self.valid, self.config = data, valid, config
        self.cache = cache or FeatureCache()
        self.embed = embed
        self.prepared: Prepared | None = None

    def prepare_data(self) -> None:
        if is_prepared(self.folder):
            return
        if self.data is None or self.config is None:
            raise BadInputError(f"{self.folder} holds no prepared data and no table was given")
        self.prepared = prepare(
            self.data, self.config, self.cache, self.folder, self.valid, self.embed
        )

    def setup(self, stage: str | None = None) -> None:
        """Every process reads the prepared folder, unless it prepared it itself."""
        if self.prepared is None:
            self.prepared = load(self.folder)

    def train_dataloader(self, settings: TrainSettings | None = None) -> DataLoader:
        """Batches of this process's share of the training rows. `settings`: those training
        runs under (a prepared folder may be trained with others); default: the prepared ones."""
        prepared = self.prepared
        settings = (settings or prepared.config.train).for_rows(len(prepared.rows["train"]))
        rank, count = process_rank(settings), process_count(settings)
        rows = rows_of_process(prepared.rows["train"], rank, count)
        return batch_loader(prepared.parts["table"], rows, settings.batch_size, True, settings.seed)

    def val_dataloader(self) -> DataLoader:
        prepared = self.prepared
        return batch_loader(prepared.parts[prepared.valid_part], prepared.rows["valid"], EVAL_BATCH)
