"""`polymodal.Model`: one estimator with fit / predict / predict_proba / evaluate / embed / save /
load.

`fit` reads as the recipe: prepare (split → schema → features, on disk) → network → train →
metrics → save. Learned state ends with `_`, as in scikit-learn.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from polymodal.config import Config, TargetConfig, load_config
from polymodal.data.cache import FeatureCache
from polymodal.data.features import FittedSchema, encode_inputs
from polymodal.data.problems import BadInputError, ProblemLog
from polymodal.data.table import Table, read_table
from polymodal.machine import reuse_freed_memory
from polymodal.network import MultimodalNet, check_dropout_names
from polymodal.tasks import Task, encode_targets
from polymodal.training.batches import TensorBatches, to_tensors
from polymodal.training.datamodule import Part, PolymodalDataModule, Prepared, is_prepared
from polymodal.training.distributed import check_strategy, environment, process_rank
from polymodal.training.embeddings import embed_frozen_inputs
from polymodal.training.fit import (
    CHECKPOINTS,
    LAST_CHECKPOINT,
    TrainResult,
    remove_checkpoints,
    train_network,
)
from polymodal.version import __version__

WEIGHTS, CONFIG, METRICS = "model.safetensors", "config.json", "metrics.json"
PREPARED_DIR = ".prepared"  # inside the output folder while training; removed after
# Set by rank 0 for the training processes Lightning's launcher starts from it (they inherit
# its environment): the folder rank 0 has finished preparing, so they need not prepare again.
RANK0_PREPARED = "POLYMODAL_RANK0_PREPARED"
PREDICT_BATCH = 256
DataLike = str | Path | pd.DataFrame | Table


class Features(dict):
    """Encoded inputs `{input: {"values", "present", "lengths"?}}` and the problems met while
    encoding them (a plain dict for everything that reads features)."""

    def __init__(self, items: dict, problems: ProblemLog) -> None:
        super().__init__(items)
        self.problems = problems


class Model:
    """A multimodal model over the columns of a table.

    >>> model = Model(target="label").fit("train.csv", out="runs/first")
    >>> model.predict("new.csv")
    """

    def __init__(
        self,
        target: str | list[str] | None = None,
        *,
        inputs: list[str] | None = None,
        fusion: str | None = None,
        config: Config | str | Path | None = None,
        cache: FeatureCache | None = None,
    ) -> None:
        given = config if isinstance(config, Config) else load_config(config)
        self.config = given.model_copy(deep=True)  # the caller's Config is never changed
        self._config_given = config is not None  # else a prepared folder's settings apply
        if target:
            names = [target] if isinstance(target, str) else list(target)
            weights = {t.column: t for t in self.config.targets}
            self.config.targets = [weights.get(n) or TargetConfig(column=n) for n in names]
        if inputs:
            self.config.inputs = list(inputs)
        if fusion:
            self.config.model.fusion = fusion
        self.cache = cache or FeatureCache()
        self.schema_: FittedSchema | None = None
        self.net_: MultimodalNet | None = None
        self.metrics_: dict = {}
        self.embedding_seconds_ = 0.0  # time spent in frozen encoders by the last fit

    # ----------------------------------------------------------------- training
    def fit(
        self,
        data: DataLike,
        valid: DataLike | None = None,
        *,
        out: str | Path | None = None,
        overwrite: bool = False,
        resume: bool = False,
    ) -> Model:
        """Train on `data` and save to `out` if given.

        `data` is a table (its `split` column, or a seeded split) or a folder written by
        `prepare`: then no file is decoded again, the data settings are the prepared ones, and
        training and architecture settings are this Model's config if one was given, else the
        prepared ones.
        """
        check_strategy(self.config.train)  # before hours of data preparation
        if self.config.inputs:  # named inputs are known before the data is prepared
            check_dropout_names(self.config.train.modality_dropout, self.config.inputs)
        from_folder = is_prepared_folder(data)
        if not self.config.targets and not from_folder:
            raise BadInputError("no target: pass target='column' (CLI: --target COLUMN)")
        out_dir = Path(out) if out else None
        if resume and not (out_dir and (out_dir / LAST_CHECKPOINT).is_file()):
            raise BadInputError(f"--resume: no checkpoint at {out_dir or '.'}/{LAST_CHECKPOINT}")
        writer = process_rank(self.config.train) == 0  # the others of a DDP run write nothing
        if out_dir and writer:
            check_output_folder(out_dir, overwrite=overwrite, resume=resume)
        workdir = out_dir or Path(tempfile.mkdtemp(prefix="polymodal-"))  # checkpoints go here
        # what only this process writes: a non-writer's temporary workdir is already its own
        private = writer or out_dir is None
        own = workdir if private else Path(tempfile.mkdtemp(prefix="polymodal-rank-"))
        folder = Path(data) if from_folder else own / PREPARED_DIR
        given = os.environ.get(RANK0_PREPARED)
        if given and not writer and not from_folder and is_prepared(given):
            folder = Path(given)  # read, not prepared a second time
        module = PolymodalDataModule(
            folder, data, config=self.config, valid=valid, cache=self.cache, embed=self._embed
        )
        module.prepare_data()
        module.setup("fit")
        prepared = module.prepared
        if from_folder:
            own = self.config if self._config_given else prepared.config
            self.config = with_training_settings(prepared.config, own)
        settings = self.config.train.for_rows(len(prepared.rows["train"]))
        self.config = self.config.model_copy(update={"train": settings})  # saved as trained
        self.schema_ = prepared.schema
        self.net_ = self._network(prepared.schema)
        check_dropout_names(settings.modality_dropout, self.net_.input_names)
        self.embedding_seconds_ = prepared.embedding_seconds
        with environment(RANK0_PREPARED, str(folder.resolve()) if writer else None):
            result = train_network(
                self.net_,
                module.train_dataloader(settings),
                module.val_dataloader(),
                settings,
                workdir=workdir,
                resume=resume,
            )
        self.net_.eval()
        if not writer:  # its share is trained; rank 0 scores and saves the model
            shutil.rmtree(own, ignore_errors=True)
            return self
        self.metrics_ = self._fit_metrics(result, prepared)
        if not from_folder:
            shutil.rmtree(folder, ignore_errors=True)
        if out_dir:
            self.save(out_dir, overwrite=True)
            remove_checkpoints(out_dir)  # only once the model is safely written
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        return self

    def prepare(self, data: DataLike, folder: str | Path, valid: DataLike | None = None) -> Path:
        """Everything before training, written to `folder`: split, schema, decoded features,
        frozen-encoder embeddings. `fit(folder)` trains from it, in any process."""
        if not self.config.targets:
            raise BadInputError("no target: pass target='column' (CLI: --target COLUMN)")
        folder = Path(folder)
        check_output_folder(folder, overwrite=False, resume=False)
        module = PolymodalDataModule(
            folder, data, config=self.config, valid=valid, cache=self.cache, embed=self._embed
        )
        module.prepare_data()
        return folder

    def _network(self, schema: FittedSchema) -> MultimodalNet:
        """The network for `schema`, with its pretrained encoders' weights, built once."""
        if self.net_ is None or self.schema_ is not schema:
            self.schema_ = schema
            torch.manual_seed(self.config.train.seed)  # the same weights in any process
            self.net_ = MultimodalNet(schema, self.config.model)
            self.net_.load_pretrained_weights()
        return self.net_

    def _embed(self, schema: FittedSchema, inputs: dict) -> dict:
        """Frozen pretrained encoders' inputs replaced by their cached embeddings, so epochs
        never run those backbones."""
        return embed_frozen_inputs(self._network(schema), inputs, self.cache)

    def _fit_metrics(self, result: TrainResult, prepared: Prepared) -> dict:
        rows = prepared.rows
        metrics = {
            "history": result.history,
            "best_epoch": result.best_epoch,
            "stop_reason": result.stop_reason,
            "train_seconds": result.seconds,
            "embedding_seconds": self.embedding_seconds_,
            "rows": {"train": int(len(rows["train"])), "valid": int(len(rows["valid"]))},
            "valid": self._evaluate_part(prepared.parts[prepared.valid_part], rows["valid"]),
            "problems": prepared.problems,
            "parameters": sum(p.numel() for p in self.net_.parameters()),
        }
        if len(rows["test"]):
            metrics["rows"]["test"] = int(len(rows["test"]))
            metrics["test"] = self._evaluate_part(prepared.parts["table"], rows["test"])
        return metrics

    def _evaluate_part(self, part: Part, rows: np.ndarray) -> dict:
        """Metrics on prepared rows, as `evaluate` would give on the table they came from."""
        decoded = self.decode(self.forward(part.inputs, rows))
        return {
            name: self.task(name).evaluate(values[rows].numpy(), known[rows].numpy(), decoded[name])
            for name, (values, known) in part.targets.items()
        }

    # --------------------------------------------------------------- prediction
    def encode(self, data: DataLike, log: ProblemLog | None = None) -> Features:
        """Features of every row as tensors, `{input: {"values", "present", "lengths"?}}`,
        with the problems met on the way (bad files, undecodable cells) in `.problems`.

        Explanations and robustness checks edit these (e.g. set `present` to False to remove
        a modality, the same masking used for missing inputs) and pass them to `forward`.
        """
        self._check_fitted()
        table = read_table(data)
        log = log if log is not None else ProblemLog(table=table.name)
        return Features(to_tensors(encode_inputs(self.schema_, table, log, self.cache)), log)

    def forward(
        self, features: dict, rows: np.ndarray | None = None, first_row: int = 0
    ) -> dict[str, np.ndarray]:
        """The network's raw outputs per target (logits, or standardised values), batched.
        `first_row`: the number of the first row (a chunk of a larger table), by which a
        generated target seeds each row, so the same row gives the same sample every call."""
        for task in self.net_.tasks if self.net_ is not None else []:
            task.number_rows(first_row)
        chunks = self._in_batches(features, rows, self.net_)
        return {
            name: torch.cat([chunk[name].float() for chunk in chunks]).numpy()
            for name in self.net_.target_names
        }

    def _in_batches(self, features: dict, rows: np.ndarray | None, step: Callable) -> list:
        """`step(inputs)` on each batch of `rows` (None: every row), in eval mode."""
        self._check_fitted()
        total = len(next(iter(features.values()))["present"])
        rows = np.arange(total) if rows is None else rows
        reuse_freed_memory()
        self.net_.eval()
        with torch.inference_mode():
            return [
                step(batch["inputs"])
                for batch in TensorBatches(features, None, rows, PREDICT_BATCH)
            ]

    def raw_outputs(self, data: DataLike) -> dict[str, np.ndarray]:
        """The network's raw outputs per target for every row of `data`."""
        return self.forward(self.encode(data))

    def decode(self, outputs: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """Raw outputs → each target's decoded arrays (labels, probabilities, values)."""
        return {name: self.task(name).decode(outputs[name]) for name in self.net_.target_names}

    def predict(self, data: DataLike) -> pd.DataFrame:
        """One prediction column per target, plus a probability column per class."""
        return self.predictions(self.encode(data))

    def predictions(self, features: dict, first_row: int = 0) -> pd.DataFrame:
        """`predict` on features already encoded (rows numbered from `first_row`)."""
        columns: dict[str, np.ndarray] = {}
        for name, decoded in self.decode(self.forward(features, first_row=first_row)).items():
            columns.update(self.task(name).columns(decoded))
        return pd.DataFrame(columns)

    def set_decoding(self, **options: object) -> Model:
        """Decoding settings for later predictions of generated targets: text `beam`,
        `nbest`, `length_penalty`, `generate_length`; image `guidance`, `steps`, `seed`,
        `image_dir` (None leaves a setting as it is). Each target is given its own."""
        self._check_fitted()
        given = {key: value for key, value in options.items() if value is not None}
        known = self.decoding_settings()
        unknown = sorted(set(given) - known)
        if unknown:
            takes = ", ".join(sorted(known)) or "none"
            raise BadInputError(
                f"{', '.join(unknown)}: only generated targets take decoding settings, and "
                f"this model's take: {takes}"
            )
        for task in self.net_.tasks:
            own = {key: value for key, value in given.items() if key in task.decoding}
            if own:
                task.set_decoding(own)
        return self

    @contextmanager
    def decoding(self, **options: object) -> Iterator[Model]:
        """`set_decoding(**options)` for the block only: each target's previous settings come
        back after it (a server samples one request's guidance, steps and seed this way).
        The settings are the model's own state, so a caller sharing the model among threads
        runs every forward pass and decoding on one thread, as the server does."""
        self._check_fitted()
        before = [
            (
                task,
                {
                    key: task.state.options[key]
                    for key in task.decoding
                    if key in task.state.options
                },
            )
            for task in self.net_.tasks
        ]  # tasks keep their decoding settings in state.options
        self.set_decoding(**options)
        try:
            yield self
        finally:
            for task, settings in before:
                if settings:
                    task.set_decoding(settings)

    def decoding_settings(self) -> set[str]:
        """The names `set_decoding` takes for this model's targets."""
        self._check_fitted()
        return {key for task in self.net_.tasks for key in task.decoding}

    def predict_proba(self, data: DataLike, target: str | None = None) -> pd.DataFrame:
        """Class probabilities [rows, classes] for one class target."""
        task = self.task(target)
        outputs = self.raw_outputs(data)[task.state.column]
        return task.probabilities(task.decode(outputs))

    def evaluate(self, data: DataLike, log: ProblemLog | None = None) -> dict:
        """Metrics per target on rows whose target is known."""
        self._check_fitted()
        table = read_table(data)
        decoded = self.decode(self.forward(self.encode(table, log)))
        truths = encode_targets(self.schema_.targets, table)
        return {
            name: self.task(name).evaluate(*truths[name], decoded[name])
            for name in self.net_.target_names
        }

    # --------------------------------------------------------------- embeddings
    def embed(
        self, data: DataLike, column: str | None = None, log: ProblemLog | None = None
    ) -> np.ndarray:
        """One vector per row, float32 [rows, dim]: the fused vector the heads read, or, for
        a column of a match target, that column's vector in the space the target learned.

        With `column`, every other input is masked exactly as a missing one is (and its cells
        are not read), so the vector says what that column alone says: a query of one modality
        then compares with stored rows of that column. Rows where `column` itself is missing
        or cannot be decoded get a NaN vector; an undecodable cell or file is also logged in
        `log`, as `encode` logs it. The table need not hold the other inputs' columns.
        """
        self._check_fitted()
        table = read_table(data)
        if column is not None:
            table = without_other_inputs(table, self.schema_, column)
        features = self.encode(table, log)
        if column is not None:
            features = only_input(features, column)
        net = self.net_
        chunks = self._in_batches(
            features, None, lambda inputs: net.embedding(net.encode(inputs), column)
        )
        if not chunks:
            return np.zeros((0, self.config.model.dim), dtype=np.float32)
        vectors = torch.cat(chunks).float().numpy()
        if column is not None:
            vectors[~features[column]["present"].numpy()] = np.nan
        return vectors

    def class_vectors(self, column: str) -> tuple[list[str], np.ndarray] | None:
        """The classes placed in the space `embed` gives for `column`: their names and unit
        vectors, float32 [classes, dim], comparable with `embed(table, column)`. A match
        trained with `--positive-by` has them (its class proxies); None for any other space."""
        self._check_fitted()
        found = self.net_.class_vectors(column)
        if found is None:
            return None
        names, vectors = found
        return names, vectors.cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------ storage
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write model.safetensors + config.json (+ metrics.json). No pickle anywhere."""
        self._check_fitted()
        folder = Path(path)
        if not overwrite:
            check_output_folder(folder, overwrite=False, resume=False)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}
        save_file(state, folder / WEIGHTS, metadata={"format": "pt", "polymodal": __version__})
        document = {
            "polymodal_version": __version__,
            "config": self.config.model_dump(mode="json"),
            "schema": self.schema_.model_dump(mode="json"),
        }
        (folder / CONFIG).write_text(json.dumps(document, indent=1))
        (folder / METRICS).write_text(json.dumps(self.metrics_, indent=1, default=float))
        self._set_origin(folder)
        return folder

    @classmethod
    def load(cls, path: str | Path, cache: FeatureCache | None = None) -> Model:
        folder = Path(path)
        for name in (CONFIG, WEIGHTS):
            if not (folder / name).is_file():
                raise BadInputError(f"{folder} is not a polymodal model folder: {name} is missing")
        document = json.loads((folder / CONFIG).read_text())
        model = cls(config=Config.model_validate(document["config"]), cache=cache)
        model.schema_ = FittedSchema.model_validate(document["schema"])
        model.net_ = MultimodalNet(model.schema_, model.config.model)
        model.net_.load_state_dict(load_file(folder / WEIGHTS))
        model.net_.eval()
        if (folder / METRICS).is_file():
            model.metrics_ = json.loads((folder / METRICS).read_text())
        model._set_origin(folder)
        return model

    def _set_origin(self, folder: Path) -> None:
        """Tell each task which saved model it belongs to: files a task generates are marked
        with the folder's name and a digest of the weights (the name alone can be reused)."""
        digest = hashlib.sha256()
        with open(folder / WEIGHTS, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        origin = {"model": folder.resolve().name, "weights_sha256": digest.hexdigest()[:16]}
        for task in self.net_.tasks:
            task.set_origin(origin)

    # ------------------------------------------------------------------ helpers
    def _check_fitted(self) -> None:
        if self.net_ is None or self.schema_ is None:
            raise RuntimeError("this Model is not fitted yet: call fit() or Model.load()")

    def task(self, name: str | None = None) -> Task:
        """The task of target `name` (the first target when None)."""
        self._check_fitted()
        names = self.net_.target_names
        if name is None:
            return self.net_.tasks[0]
        if name not in names:
            raise KeyError(f"no target {name!r}; targets: {names}")
        return self.net_.tasks[names.index(name)]

    def head(self, name: str) -> torch.nn.Module:
        return self.net_.heads[self.net_.target_names.index(name)]


def is_prepared_folder(data: object) -> bool:
    return isinstance(data, str | Path) and Path(data).is_dir() and is_prepared(data)


def without_other_inputs(table: Table, schema: FittedSchema, column: str) -> Table:
    """`table` with every input's cells emptied but those `column` reads, so embedding one
    column decodes no other file (and needs no other column in the table)."""
    names = [state.column for state in schema.inputs]
    if column not in names:
        raise BadInputError(f"no input named {column!r}; the model's inputs: {', '.join(names)}")
    kept = schema.input(column).source
    emptied = {s.source: None for s in schema.inputs if s.source != kept}
    return Table(table.frame.assign(**emptied), table.base_dir, table.name, table.first_row)


def only_input(features: dict, column: str) -> dict:
    """Every input but `column` marked absent, exactly as a missing cell or file is masked."""
    return {
        name: item if name == column else {**item, "present": torch.zeros_like(item["present"])}
        for name, item in features.items()
    }


def with_training_settings(prepared: Config, given: Config) -> Config:
    """The prepared data's settings (targets, inputs, preprocessing, encoders) with the given
    training and architecture settings: those may change between runs on one preparation."""
    model = given.model.model_copy(update={"encoders": prepared.model.encoders})
    return prepared.model_copy(update={"train": given.train, "model": model})


def check_output_folder(folder: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to write into a non-empty folder unless told to (nothing is lost silently)."""
    if not folder.exists() or resume:
        return
    if not folder.is_dir():
        raise BadInputError(f"output {folder} exists and is not a folder")
    if any(folder.iterdir()) and not overwrite:
        raise BadInputError(f"output folder {folder} is not empty; pass --overwrite to replace it")
    if overwrite:
        for name in (WEIGHTS, CONFIG, METRICS):
            (folder / name).unlink(missing_ok=True)
        shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)
        shutil.rmtree(folder / PREPARED_DIR, ignore_errors=True)
