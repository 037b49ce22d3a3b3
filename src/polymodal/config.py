"""Settings, as plain pydantic models.

Three groups, kept apart as open_clip and timm keep them apart: what the user asks for
(`Config`: columns, targets, preprocessing, architecture, training), and what fitting
learns from the data (`polymodal.data.schema.FittedSchema`), saved side by side in
`config.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Kind = Literal["text", "image", "audio", "video", "number", "category"]
Task = Literal["multiclass", "binary", "multilabel", "regression"]
KINDS: tuple[str, ...] = ("text", "image", "audio", "video", "number", "category")
FILE_KINDS: tuple[str, ...] = ("image", "audio", "video")  # cells hold paths to files


class Strict(BaseModel):
    """A settings object that rejects unknown keys, so a typo in YAML is an error."""

    model_config = ConfigDict(extra="forbid")


class ColumnConfig(Strict):
    """How to read one input column; `kind` overrides what inference guessed.

    `source` makes a derived input: `{kind: audio, source: clip}` reads the sound track
    of the video column `clip` as an audio input of its own.
    """

    kind: Kind | None = None
    source: str | None = None


class TargetConfig(Strict):
    column: str
    task: Task | None = None
    weight: float = Field(1.0, gt=0, description="weight of this target's loss in the sum")
    separator: str = Field("|", description="splits multi-label cells such as 'a|b'")


class ImageSettings(Strict):
    size: int | None = Field(None, description="square side in pixels; None: from the data")
    channels: Literal[1, 3] | None = Field(None, description="1 grey, 3 colour; None: from data")


class AudioSettings(Strict):
    sample_rate: int = 16000
    n_mels: int = 64
    n_fft: int = 400
    hop_length: int = 160
    max_seconds: float | None = Field(None, description="crop length; None: from the data")


class VideoSettings(Strict):
    frames: int = 8
    size: int = 64


class TextSettings(Strict):
    vocab_size: int = 8000
    max_tokens: int | None = Field(None, description="None: 95th percentile of the data")
    lowercase: bool = True


class PreprocessSettings(Strict):
    image: ImageSettings = ImageSettings()
    audio: AudioSettings = AudioSettings()
    video: VideoSettings = VideoSettings()
    text: TextSettings = TextSettings()


class ModelSettings(Strict):
    dim: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    fusion: str = "attention"
    encoders: dict[str, str] = Field(
        default_factory=dict, description="encoder name per kind or column, e.g. {image: image_cnn}"
    )


class TrainSettings(Strict):
    max_epochs: int = 15
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    patience: int = 5
    warmup_fraction: float = 0.05
    max_time: str | None = Field(None, description="wall-clock limit, DD:HH:MM:SS or minutes")
    seed: int = 0
    valid_fraction: float = 0.1
    modality_dropout: float = Field(
        0.0, description="drop whole inputs while training: robust to missing ones, at a cost"
    )
    augment: bool = Field(False, description="random shifts (images), SpecAugment (audio)")
    strict: bool = False


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
