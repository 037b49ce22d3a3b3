"""Preparation apart from training: one process prepares, any number can train.

`prepare` does everything that reads the user's files or learns from the data: it splits
the rows, fits the schema (kinds, tokenizers, vocabularies, scaling, label maps), decodes
every input (through the feature cache) and runs frozen pretrained encoders once. `save`
writes the result to a folder (schema and config as JSON, arrays as .npy), and
`PolymodalDataModule.setup` reads it back: training from a prepared folder never opens a
media file again. Batches come from a standard `DataLoader` over `PreparedRows` with a batch
sampler, so a distributed sampler can shard the rows.
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

from polymodal.config import Config
from polymodal.data.cache import FeatureCache
from polymodal.data.features import FittedSchema, encode_inputs, fit_schema
from polymodal.data.problems import BadInputError, ProblemLog
from polymodal.data.schema import file_columns, resolve_inputs
from polymodal.data.table import Table, read_table, split_rows
from polymodal.tasks import encode_targets
from polymodal.training.batches import to_tensors
from polymodal.training.distributed import process_rank, rows_of_process

PREPARED = "prepared.json"
EVAL_BATCH = 256
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
    valid: str | Path | Table | None = None,
    embed: Embedder | None = None,
) -> Prepared:
    """Split, fit the schema on the training rows, decode every row, embed frozen inputs."""
    settings = config.train
    table = read_table(data)
    targets = [target.column for target in config.targets]
    kinds = resolve_inputs(table, config, targets)
    splits = split_rows(table, settings.valid_fraction, settings.seed, file_columns(kinds, config))
    if valid is not None:  # a separate validation table: every non-test row trains
        splits["train"] = np.sort(np.concatenate([splits["train"], splits["valid"]]))
    schema = fit_schema(table, splits["train"], config)
    log = ProblemLog(strict=settings.strict, table=table.name)
    started, seconds = time.perf_counter(), 0.0
    parts = {"table": encode_part(schema, table, log, cache)}
    valid_part = "table"
    if valid is not None:
        valid_table = read_table(valid)
        log.table = valid_table.name
        parts["valid"] = encode_part(schema, valid_table, log, cache)
        splits["valid"], valid_part = np.arange(len(valid_table)), "valid"
    if embed is not None:
        started = time.perf_counter()
        for part in parts.values():
            part.inputs = embed(schema, part.inputs)
        seconds = time.perf_counter() - started
    splits["train"] = rows_with_known_target(parts["table"].targets, splits["train"])
    if len(splits["train"]) == 0:
        raise BadInputError(f"{table.name}: no training rows with a known target")
    check_scorable(parts, splits, valid_part, table.name)
    return Prepared(config, schema, parts, splits, valid_part, table.name, log.to_json(), seconds)


def encode_part(schema: FittedSchema, table: Table, log: ProblemLog, cache: FeatureCache) -> Part:
    inputs = to_tensors(encode_inputs(schema, table, log, cache))
    targets = {
        name: (torch.from_numpy(values), torch.from_numpy(known))
        for name, (values, known) in encode_targets(schema.targets, table).items()
    }
    return Part(inputs, targets)


def check_scorable(
    parts: dict[str, Part], splits: dict[str, np.ndarray], valid_part: str, table: str
) -> None:
    """Every target must have rows to score in the validation and test parts: a run that
    cannot be scored would otherwise end with a result that means nothing."""
    for split, part in (("valid", parts[valid_part]), ("test", parts["table"])):
        rows = splits.get(split, np.empty(0, dtype=np.int64))
        if split == "test" and not len(rows):
            continue  # no test rows asked for
        for name, (_, known) in part.targets.items():
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
def save(prepared: Prepared, folder: Path) -> Path:
    """Arrays as `.npy` files named by position (column names may hold any character), the
    rest as JSON; `prepared.json` is written last, so a folder that has it is complete."""
    folder.mkdir(parents=True, exist_ok=True)
    for part_name, part in prepared.parts.items():
        for index, item in enumerate(part.inputs.values()):
            for key, tensor in item.items():
                np.save(folder / f"{part_name}.input{index}.{key}.npy", tensor.numpy())
        for index, (values, known) in enumerate(part.targets.values()):
            np.save(folder / f"{part_name}.target{index}.values.npy", values.numpy())
            np.save(folder / f"{part_name}.target{index}.known.npy", known.numpy())
    for split, rows in prepared.rows.items():
        np.save(folder / f"rows.{split}.npy", rows)
    document = {
        "config": prepared.config.model_dump(mode="json"),
        "schema": prepared.schema.model_dump(mode="json"),
        "parts": {name: sorted(keys_of(part)) for name, part in prepared.parts.items()},
        "splits": sorted(prepared.rows),
        "valid_part": prepared.valid_part,
        "table": prepared.table_name,
        "problems": prepared.problems,
        "embedding_seconds": prepared.embedding_seconds,
    }
    (folder / PREPARED).write_text(json.dumps(document, indent=1))
    return folder


def keys_of(part: Part) -> set[str]:
    return {f"{index}.{key}" for index, item in enumerate(part.inputs.values()) for key in item}


def is_prepared(folder: str | Path) -> bool:
    return (Path(folder) / PREPARED).is_file()


def load(folder: str | Path) -> Prepared:
    """A prepared folder back in memory; reads no media file."""
    folder = Path(folder)
    if not is_prepared(folder):
        raise BadInputError(f"{folder} is not a prepared folder: {PREPARED} is missing")
    document = json.loads((folder / PREPARED).read_text())
    schema = FittedSchema.model_validate(document["schema"])
    parts = {}
    for part_name, keys in document["parts"].items():
        inputs: Tensors = {state.column: {} for state in schema.inputs}
        names = [state.column for state in schema.inputs]
        for entry in keys:
            index, key = entry.split(".", 1)
            array = np.load(folder / f"{part_name}.input{index}.{key}.npy")
            inputs[names[int(index)]][key] = torch.from_numpy(array)
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
            name: {key: tensor[index] for key, tensor in item.items()}
            for name, item in self.part.inputs.items()
        }
        targets = {name: (v[index], k[index]) for name, (v, k) in self.part.targets.items()}
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
        # The process that prepared keeps what it wrote: reading it back would only copy it.
        self.prepared = prepare(self.data, self.config, self.cache, self.valid, self.embed)
        save(self.prepared, self.folder)

    def setup(self, stage: str | None = None) -> None:
        """Every process reads the prepared folder, unless it prepared it itself."""
        if self.prepared is None:
            self.prepared = load(self.folder)

    def train_dataloader(self) -> DataLoader:
        prepared, settings = self.prepared, self.prepared.config.train
        rows = rows_of_process(prepared.rows["train"], process_rank(settings), settings.world_size)
        return batch_loader(prepared.parts["table"], rows, settings.batch_size, True, settings.seed)

    def val_dataloader(self) -> DataLoader:
        prepared = self.prepared
        return batch_loader(prepared.parts[prepared.valid_part], prepared.rows["valid"], EVAL_BATCH)
