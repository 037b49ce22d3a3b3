"""Settings, as plain pydantic models.

Three groups, kept apart as open_clip and timm keep them apart: what the user asks for
(`Config`: columns, targets, preprocessing, architecture, training), and what fitting
learns from the data (`polymodal.data.schema.FittedSchema`), saved side by side in
`config.json`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class Strict(BaseModel):
    """A settings object that rejects unknown keys, so a typo in YAML is an error."""

    model_config = ConfigDict(extra="forbid")


class ColumnConfig(Strict):
    """How to read one input column; `kind` overrides what inference guessed.

    `source` makes a derived input: `{kind: audio, source: clip}` reads the sound track
    of the video column `clip` as an audio input of its own.
    """

    kind: str | None = Field(
        None, description="a registered modality (polymodal.modalities); None: inferred"
    )
    source: str | None = None


class TargetConfig(Strict):
    column: str
    task: str | None = Field(
        None, description="a registered task (polymodal list tasks); None: inferred from the values"
    )
    weight: float = Field(1.0, gt=0, description="weight of this target's loss in the sum")
    separator: str = Field("|", description="splits multi-label cells such as 'a|b'")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the task's own settings, checked by the task (e.g. text: tokenizer, beam)",
    )


class ImageSettings(Strict):
    size: int | None = Field(None, description="square side in pixels; None: from the data")
    channels: Literal[1, 3] | None = Field(None, description="1 grey, 3 colour; None: from data")


class AudioSettings(Strict):
    sample_rate: int = 16000
    n_mels: int = 32
    n_fft: int = 400
    hop_length: int = 160
    max_seconds: float | None = Field(None, description="crop length; None: from the data")


class VideoSettings(Strict):
    frames: int = Field(8, description="frames per clip when `fps` is None")
    size: int = 64
    fps: float | None = Field(
        None,
        gt=0,
        description="frames per second of clip time; None: `frames` frames spread over each clip",
    )
    max_seconds: float | None = Field(
        None, gt=0, description="crop length when `fps` is set; None: from the data"
    )


class TextSettings(Strict):
    vocab_size: int = 8000
    max_tokens: int | None = Field(None, description="None: 95th percentile of the data")
    lowercase: bool = True


class PreprocessSettings(Strict):
    image: ImageSettings = ImageSettings()
    audio: AudioSettings = AudioSettings()
    video: VideoSettings = VideoSettings()
    text: TextSettings = TextSettings()


EncoderMode = Literal["frozen", "finetune", "lora"]
PRETRAINED_PREFIXES = ("hf:", "timm:")


class EncoderChoice(Strict):
    """One column's or modality's encoder.

    `source` is a registered encoder (`image_cnn`), a hub model (`hf:bert-base-uncased`,
    `timm:resnet50`) or a local folder saved by transformers or timm. The other settings
    apply to pretrained encoders only.
    """

    source: str
    mode: EncoderMode = Field(
        "frozen", description="frozen (embeddings cached), finetune, or lora (peft adapters)"
    )
    lr_scale: float = Field(
        0.1, gt=0, description="finetune / lora: the encoder's learning rate is lr × this"
    )
    lora_rank: int = Field(8, ge=1)
    gradient_checkpointing: bool = Field(False, description="less memory, more compute")
    tokens: int = Field(
        8, ge=1, le=256, description="its output is summarised to this many tokens for fusion"
    )

    @property
    def pretrained(self) -> bool:
        return is_pretrained_source(self.source)


def is_pretrained_source(source: str) -> bool:
    """Hub names carry a prefix; anything with a path separator is a folder. Registered
    encoder names are plain identifiers."""
    return source.startswith(PRETRAINED_PREFIXES) or "/" in source or source.startswith(("~", "."))


class ModelSettings(Strict):
    dim: int = 64
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    fusion: str = "concat"
    encoders: dict[str, str | EncoderChoice] = Field(
        default_factory=dict,
        description="encoder per kind or column: {image: image_cnn, text: hf:bert-base-uncased}",
    )

    def encoder_choice(self, column: str, kind: str) -> EncoderChoice | None:
        """The encoder set for the column, else for its kind; None: the kind's default."""
        choice = self.encoders.get(column) or self.encoders.get(kind)
        if choice is None or isinstance(choice, EncoderChoice):
            return choice
        return EncoderChoice(source=choice)


BATCH = 64  # the default batch size; the learning rate's reference
LARGE_BATCH = 128  # the default batch size from LARGE_BATCH_FROM_ROWS training rows on
LARGE_BATCH_FROM_ROWS = 50 * LARGE_BATCH
BASE_LR = 2e-3  # the default learning rate at batch BATCH


class TrainSettings(Strict):
    """How long and how to train. The budget follows the data (training/budget.py): the
    learning rate holds after a warm-up while validation improves, then decays for a short
    cool-down, and training stops when that ends."""

    max_epochs: int = Field(60, description="a cap: training usually ends earlier")
    batch_size: int | None = Field(
        None,
        ge=1,
        description=f"None: {BATCH}, or {LARGE_BATCH} from {LARGE_BATCH_FROM_ROWS:,} training "
        "rows on",
    )
    lr: float | None = Field(
        None, ge=0, description=f"None: {BASE_LR} up to batch {BATCH}, × √(batch / {BATCH}) above"
    )
    weight_decay: float = 0.05
    patience: int = Field(
        2, description="epochs without a better validation score or loss before the cool-down"
    )
    cooldown_fraction: float = Field(
        0.25, gt=0, description="the cool-down's length, as a share of the epochs before it"
    )
    warmup_epochs: float = Field(1.0, ge=0, description="at most a tenth of max_epochs")
    max_time: str | None = Field(None, description="wall-clock limit, DD:HH:MM:SS or minutes")
    checkpoint_seconds: float = Field(
        60,
        ge=0,
        description="the resumable state (weights, optimiser, schedule) is written at the end of "
        "an epoch once this many seconds have passed since its last write, and after the first "
        "and the final epoch; 0: after every epoch",
    )
    seed: int = 0
    valid_fraction: float = 0.1
    modality_dropout: float | dict[str, float] = Field(
        0.0,
        description="drop whole inputs while training: robust to missing ones, at a cost; one "
        "chance for every input, or {column: chance} (inputs not named: never dropped)",
    )
    augment: bool = Field(False, description="random shifts (images), SpecAugment (audio)")
    precision: Literal["auto", "32", "bf16"] = Field(
        "auto",
        description="auto: bf16 mixed precision where the GPU or CPU (AMX, AVX512-BF16) computes "
        "bf16, else 32-bit",
    )
    strict: bool = False
    compile: bool = Field(
        False, description="torch.compile the model for training: faster steps after a compile"
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="processes decoding files (None: $POLYMODAL_WORKERS, else every core)",
    )
    devices: int = Field(
        1, ge=1, description="training processes per machine (CPU: gloo; GPU: one per device)"
    )
    num_nodes: int = Field(1, ge=1, description="machines, each running `devices` processes")
    strategy: Literal["auto", "ddp", "fsdp"] = Field(
        "auto",
        description="ddp: each process trains on its own share of the rows; fsdp: the same, "
        "with the weights sharded across processes (GPUs only)",
    )
    ddp_timeout: float = Field(
        300,
        gt=0,
        description="seconds a training process waits for the others (at the start, while they "
        "prepare their data, and at every step) before the run stops with an error",
    )

    @field_validator("modality_dropout")
    @classmethod
    def _chances(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        chances = value.values() if isinstance(value, dict) else [value]
        if any(not 0 <= chance < 1 for chance in chances):
            raise ValueError(f"a chance is in [0, 1): got {value}")
        return value

    def for_rows(self, train_rows: int) -> TrainSettings:
        """These settings with the batch size and learning rate the defaults leave open chosen
        for `train_rows` training rows.

        On a CPU, batches of 128 train 15-30 % more rows a second than batches of 64 (AV-MNIST's
        network on 2 cores), at the same accuracy once the learning rate grows with the square
        root of the batch (BENCHMARKS.md). A small table keeps 64 so that an epoch, the unit
        the budget decides in, still holds 50 steps or more."""
        batch = self.batch_size
        if batch is None:
            batch = LARGE_BATCH if train_rows >= LARGE_BATCH_FROM_ROWS else BATCH
        lr = self.lr if self.lr is not None else BASE_LR * math.sqrt(max(1.0, batch / BATCH))
        return self.model_copy(update={"batch_size": batch, "lr": lr})

    @property
    def world_size(self) -> int:
        """Training processes in all."""
        return self.devices * self.num_nodes

    @model_validator(mode="before")
    @classmethod
    def _drop_retired_keys(cls, values: Any) -> Any:
        """Models saved before the budget followed the data carry `warmup_fraction` (of a
        cosine over `max_epochs`): it no longer applies, and they must still load."""
        if isinstance(values, dict) and "warmup_fraction" in values:
            values = {key: value for key, value in values.items() if key != "warmup_fraction"}
        return values


class Config(Strict):
    targets: list[TargetConfig] = Field(default_factory=list)
    inputs: list[str] | None = Field(None, description="columns to use; None: all but targets")
    columns: dict[str, ColumnConfig] = Field(default_factory=dict)
    preprocess: PreprocessSettings = PreprocessSettings()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()


class ConfigError(ValueError):
    """A configuration the user wrote is wrong; the message says where."""


def load_config(path: str | Path | None) -> Config:
    """Read a YAML config; None gives the defaults."""
    if path is None:
        return Config()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return Config.model_validate(raw)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
