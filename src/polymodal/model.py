"""`polymodal.Model`: one estimator with fit / predict / predict_proba / evaluate / save / load.

`fit` reads as the recipe: table → split → schema → features → network → train → metrics →
save. Learned state ends with `_`, as in scikit-learn.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from polymodal import __version__
from polymodal.config import Config, TargetConfig, load_config
from polymodal.data.cache import FeatureCache
from polymodal.data.features import FittedSchema, encode_inputs, encode_targets, fit_schema
from polymodal.data.problems import BadInputError, ProblemLog
from polymodal.data.schema import file_columns, resolve_inputs
from polymodal.data.table import Table, read_table, split_rows
from polymodal.data.targets import TargetState
from polymodal.evaluation.metrics import target_metrics
from polymodal.network import MultimodalNet
from polymodal.training.batches import TensorBatches, to_tensors
from polymodal.training.embeddings import embed_frozen_inputs
from polymodal.training.fit import (
    CHECKPOINTS,
    LAST_CHECKPOINT,
    TrainResult,
    remove_checkpoints,
    train_network,
)

if TYPE_CHECKING:
    from polymodal.explain import Explanation

WEIGHTS, CONFIG, METRICS = "model.safetensors", "config.json", "metrics.json"
PREDICT_BATCH = 256
DataLike = str | Path | pd.DataFrame | Table


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
        self.config = config if isinstance(config, Config) else load_config(config)
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
        self.problems_: ProblemLog = ProblemLog()
        self.embedding_seconds_ = 0.0

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
        """Train on `data` (its `split` column, or a seeded split) and save to `out` if given."""
        if not self.config.targets:
            raise BadInputError("no target: pass target='column' (CLI: --target COLUMN)")
        out_dir = Path(out) if out else None
        if resume and not (out_dir and (out_dir / LAST_CHECKPOINT).is_file()):
            raise BadInputError(f"--resume: no checkpoint at {out_dir or '.'}/{LAST_CHECKPOINT}")
        if out_dir:
            check_output_folder(out_dir, overwrite=overwrite, resume=resume)
        settings = self.config.train
        table = read_table(data)
        kinds = resolve_inputs(table, self.config, [t.column for t in self.config.targets])
        together = file_columns(kinds, self.config)
        splits = split_rows(table, settings.valid_fraction, settings.seed, together)
        if valid is not None:  # a separate validation table: every non-test row trains
            splits["train"] = np.sort(np.concatenate([splits["train"], splits["valid"]]))
        self.schema_ = fit_schema(table, splits["train"], self.config)
        self.problems_ = ProblemLog(strict=settings.strict, table=table.name)
        self.net_ = MultimodalNet(self.schema_, self.config.model)
        self.net_.load_pretrained_weights()
        inputs, targets = self._training_tensors(table, self.problems_)
        if valid is not None:
            valid_table = read_table(valid)
            self.problems_.table = valid_table.name
            valid_inputs, valid_targets = self._training_tensors(valid_table, self.problems_)
        else:
            valid_inputs, valid_targets = inputs, targets
            valid_table = table
        train_rows = rows_with_known_target(targets, splits["train"])
        valid_rows = splits["valid"] if valid is None else np.arange(len(valid_table))
        if len(train_rows) == 0:
            raise BadInputError(f"{table.name}: no training rows with a known target")
        workdir = out_dir or Path(tempfile.mkdtemp(prefix="polymodal-"))  # checkpoints go here
        result = train_network(
            self.net_,
            TensorBatches(inputs, targets, train_rows, settings.batch_size, True, settings.seed),
            TensorBatches(valid_inputs, valid_targets, valid_rows, PREDICT_BATCH),
            settings,
            workdir=workdir,
            resume=resume,
        )
        self.net_.eval()
        self.metrics_ = self._fit_metrics(result, table, splits, valid_table, valid_rows)
        if out_dir:
            self.save(out_dir, overwrite=True)
            remove_checkpoints(out_dir)  # only once the model is safely written
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        return self

    def _fit_metrics(
        self,
        result: TrainResult,
        table: Table,
        splits: dict[str, np.ndarray],
        valid_table: Table,
        valid_rows: np.ndarray,
    ) -> dict:
        metrics = {
            "history": result.history,
            "best_epoch": result.best_epoch,
            "train_seconds": result.seconds,
            "embedding_seconds": self.embedding_seconds_,
            "rows": {"train": int(len(splits["train"])), "valid": int(len(valid_rows))},
            "valid": self.evaluate(valid_table.subset(valid_rows)),
            "problems": self.problems_.to_json(),
            "parameters": sum(p.numel() for p in self.net_.parameters()),
        }
        if len(splits["test"]):
            metrics["rows"]["test"] = int(len(splits["test"]))
            metrics["test"] = self.evaluate(table.subset(splits["test"]))
        return metrics

    def _training_tensors(self, table: Table, log: ProblemLog) -> tuple[dict, dict]:
        """Features and targets of every row; frozen pretrained encoders' inputs arrive as
        their cached embeddings, so epochs never run those backbones."""
        features = to_tensors(encode_inputs(self.schema_, table, log, self.cache))
        started = time.perf_counter()
        features = embed_frozen_inputs(self.net_, features, self.cache)
        self.embedding_seconds_ += time.perf_counter() - started
        targets = {
            name: (torch.from_numpy(values), torch.from_numpy(known))
            for name, (values, known) in encode_targets(self.schema_, table).items()
        }
        return features, targets

    # --------------------------------------------------------------- prediction
    def encode(self, data: DataLike, log: ProblemLog | None = None) -> dict:
        """Features of every row as tensors, `{input: {"values", "present", "lengths"?}}`.

        Explanations and robustness checks edit these (e.g. set `present` to False to remove
        a modality, the same masking used for missing inputs) and pass them to `forward`.
        """
        self._check_fitted()
        table = read_table(data)
        log = log if log is not None else ProblemLog(table=table.name)
        self.last_problems_ = log
        return to_tensors(encode_inputs(self.schema_, table, log, self.cache))

    def forward(self, features: dict, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The network's raw outputs per target (logits, or standardised values), batched."""
        self._check_fitted()
        total = len(next(iter(features.values()))["present"])
        rows = np.arange(total) if rows is None else rows
        batches = TensorBatches(features, None, rows, PREDICT_BATCH)
        self.net_.eval()
        chunks: dict[str, list[torch.Tensor]] = {name: [] for name in self.net_.target_names}
        with torch.inference_mode():
            for batch in batches:
                for name, output in self.net_(batch["inputs"]).items():
                    chunks[name].append(output.float())
        return {name: torch.cat(parts).numpy() for name, parts in chunks.items()}

    def raw_outputs(self, data: DataLike, log: ProblemLog | None = None) -> dict[str, np.ndarray]:
        """The network's raw outputs per target for every row of `data`."""
        return self.forward(self.encode(data, log))

    def predict(self, data: DataLike) -> pd.DataFrame:
        """One prediction column per target, plus a probability column per class."""
        outputs = self.raw_outputs(data)
        columns: dict[str, np.ndarray] = {}
        for state in self.schema_.targets:
            decoded = decode_outputs(self.head(state.column), outputs[state.column])
            columns.update(prediction_columns(state, decoded))
        return pd.DataFrame(columns)

    def predict_proba(self, data: DataLike, target: str | None = None) -> pd.DataFrame:
        """Class probabilities [rows, classes] for one classification target."""
        state = self._target(target)
        if state.task == "regression":
            raise ValueError(f"target '{state.column}' is a regression target: no probabilities")
        outputs = self.raw_outputs(data)[state.column]
        decoded = decode_outputs(self.head(state.column), outputs)
        return pd.DataFrame(decoded["probabilities"], columns=state.classes)

    def evaluate(self, data: DataLike) -> dict:
        """Metrics per target on rows whose target is known."""
        self._check_fitted()
        table = read_table(data)
        outputs = self.raw_outputs(table)
        truths = encode_targets(self.schema_, table)
        report = {}
        for state in self.schema_.targets:
            decoded = decode_outputs(self.head(state.column), outputs[state.column])
            true, known = truths[state.column]
            report[state.column] = target_metrics(state, true, known, decoded)
        return report

    def explain(
        self, data: DataLike, rows: list[int] | np.ndarray | None = None, target: str | None = None
    ) -> Explanation:
        """Why the model predicts what it does: each input's Shapley contribution to the
        metric and to each row's prediction, and Captum attributions inside each input of
        `rows` (every row when None). See `polymodal.explain`."""
        from polymodal.explain import explain

        return explain(self, data, rows, target=target)

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
        return model

    # ------------------------------------------------------------------ helpers
    def _check_fitted(self) -> None:
        if self.net_ is None or self.schema_ is None:
            raise RuntimeError("this Model is not fitted yet: call fit() or Model.load()")

    def _target(self, name: str | None) -> TargetState:
        self._check_fitted()
        targets = self.schema_.targets
        if name is None:
            return targets[0]
        for state in targets:
            if state.column == name:
                return state
        raise KeyError(f"no target {name!r}; targets: {[t.column for t in targets]}")

    def head(self, name: str) -> torch.nn.Module:
        return self.net_.heads[self.net_.target_names.index(name)]


def decode_outputs(head: torch.nn.Module, outputs: np.ndarray) -> dict[str, np.ndarray]:
    """Raw outputs → labels and probabilities, or values in the target's own units."""
    state: TargetState = head.state
    if state.task == "regression":
        return {"value": outputs[:, 0] * state.std + state.mean}
    probabilities = head.probabilities(torch.from_numpy(outputs)).numpy()
    if state.task == "multilabel":
        return {"labels": (probabilities > 0.5).astype(np.float32), "probabilities": probabilities}
    names = np.asarray(state.classes, dtype=object)
    return {"label": names[probabilities.argmax(axis=1)], "probabilities": probabilities}


def prediction_columns(state: TargetState, decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    name = state.column
    if state.task == "regression":
        return {f"{name}_predicted": decoded["value"]}
    if state.task == "multilabel":
        hot = decoded["labels"].astype(bool)
        labels = [state.separator.join(np.asarray(state.classes)[row]) for row in hot]
        columns = {f"{name}_predicted": np.asarray(labels, dtype=object)}
    else:
        columns = {f"{name}_predicted": decoded["label"]}
    for index, label in enumerate(state.classes):
        columns[f"{name}_prob_{label}"] = decoded["probabilities"][:, index]
    return columns


def rows_with_known_target(targets: dict, rows: np.ndarray) -> np.ndarray:
    known = np.zeros(len(rows), dtype=bool)
    for _, flags in targets.values():
        known |= flags.numpy()[rows]
    return rows[known]


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
