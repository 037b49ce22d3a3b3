"""Command-line options that set the config: one table, one function, shared definitions.

`CONFIG_OPTIONS` names, for each option, the `Config` field it sets; `apply_options` lays the
options the user gave over a loaded config and returns a new one. `train` and `compare` take
the same `Annotated` definitions below, so both accept every option in the table, and each
boolean comes as a `--x/--no-x` pair: a flag can unset what a YAML config set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from polymodal.config import Config, ConfigError, TargetConfig, load_config
from polymodal.presets import add_preset, apply_encoder_options, set_gradient_checkpointing


def split_list(value: str | None) -> list[str] | None:
    """`a, b,c` → ['a', 'b', 'c']; empty → None."""
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def parse_modality_dropout(value: str | float) -> float | dict[str, float]:
    """`0.3` → one chance for every input; `video=0.5,audio=0.1` → a chance per input."""
    text = str(value)
    pairs = [part.partition("=") for part in split_list(text) or []]
    try:
        if len(pairs) == 1 and not pairs[0][1]:
            return float(text)
        if pairs and all(equals and name.strip() for name, equals, _ in pairs):
            return {name.strip(): float(chance) for name, _, chance in pairs}
    except ValueError:
        pass
    raise ConfigError(
        f"--modality-dropout {text}: expected a chance (0.3) or COLUMN=CHANCE pairs "
        "(video=0.5,audio=0.1)"
    )


def set_targets(config: Config, value: str) -> None:
    """Keep what the config says of a named target (task, weight, separator)."""
    known = {target.column: target for target in config.targets}
    names = split_list(value) or []
    config.targets = [known.get(name) or TargetConfig(column=name) for name in names]


@dataclass(frozen=True)
class ConfigOption:
    """Where one option lands: `path` is the dotted `Config` field; `edit`, when given,
    changes that field in place instead of replacing it (the encoder options add to a dict).
    An `edit` given as "module:function" is imported when the option is used: a task's
    options live in its own module, which imports torch, and `polymodal --help` should not."""

    path: str
    parse: Callable[[Any], Any] = lambda value: value
    edit: Callable[[Config, Any], None] | str | None = None

    def apply(self, config: Config, value: Any) -> None:
        if isinstance(self.edit, str):
            module, _, function = self.edit.partition(":")
            getattr(import_module(module), function)(config, value)
            return
        if self.edit is not None:
            self.edit(config, value)
            return
        *parents, field = self.path.split(".")
        holder = config
        for name in parents:
            holder = getattr(holder, name)
        setattr(holder, field, self.parse(value))


# Keyed by the command's parameter name; the flag is the name with dashes. The encoder options
# apply in this order: named encoders, the preset for kinds still unset, then modes.
CONFIG_OPTIONS: dict[str, ConfigOption] = {
    "target": ConfigOption("targets", edit=set_targets),
    # a task's own options live in its home, imported only when given (tasks bring torch)
    "decoder": ConfigOption("targets", edit="polymodal.tasks.text.cli:set_decoders"),
    "match": ConfigOption("targets", edit="polymodal.tasks.match.cli:add_match"),
    "positive_by": ConfigOption("targets", edit="polymodal.tasks.match.cli:set_positive_by"),
    "anchor": ConfigOption("targets", edit="polymodal.tasks.match.cli:set_anchor"),
    "inputs": ConfigOption("inputs", parse=split_list),
    "fusion": ConfigOption("model.fusion"),
    "epochs": ConfigOption("train.max_epochs"),
    "max_time": ConfigOption("train.max_time"),
    "seed": ConfigOption("train.seed"),
    "modality_dropout": ConfigOption("train.modality_dropout", parse=parse_modality_dropout),
    "strict": ConfigOption("train.strict"),
    "augment": ConfigOption("train.augment"),
    "workers": ConfigOption("train.workers"),
    "compile": ConfigOption("train.compile"),
    "devices": ConfigOption("train.devices"),
    "num_nodes": ConfigOption("train.num_nodes"),
    "strategy": ConfigOption("train.strategy"),
    "encoder": ConfigOption(
        "model.encoders", edit=lambda config, value: apply_encoder_options(config, value, [])
    ),
    "preset": ConfigOption("model.encoders", edit=add_preset),
    "encoder_mode": ConfigOption(
        "model.encoders", edit=lambda config, value: apply_encoder_options(config, [], value)
    ),
    "gradient_checkpointing": ConfigOption("model.encoders", edit=set_gradient_checkpointing),
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def apply_options(config: Config, options: Mapping[str, Any]) -> Config:
    """A new config: `config` with each given option set (None and [] mean not given)."""
    unknown = sorted(set(options) - set(CONFIG_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown options {unknown}; known: {', '.join(CONFIG_OPTIONS)}")
    updated = config.model_copy(deep=True)
    for name, option in CONFIG_OPTIONS.items():
        value = options.get(name)
        if value is not None and value != []:
            option.apply(updated, value)
    try:
        return Config.model_validate(updated.model_dump(warnings=False))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        given = [flag(n) for n, o in CONFIG_OPTIONS.items() if where.startswith(o.path)]
        raise ConfigError(f"{' / '.join(given) or where}: {first['msg']}") from None


def settings_from(config_path: Path | None, given: Mapping[str, Any]) -> Config:
    """The YAML config (or the defaults) with the command's config options on top; `given`
    may hold the command's other parameters too (pass `locals()`)."""
    chosen = {name: value for name, value in given.items() if name in CONFIG_OPTIONS}
    return apply_options(load_config(config_path), chosen)


# The options' definitions, shared by `train` and `compare`. None: not given (the config wins).
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML config")]
Target = Annotated[str, typer.Option("--target", help="target column(s), comma-separated")]
OptionalTarget = Annotated[
    str | None, typer.Option("--target", help="target column(s), comma-separated (or --match)")
]
Match = Annotated[
    str | None,
    typer.Option(
        "--match",
        help="COLUMN=COLUMN[=...]: train those columns into one embedding space (contrastive)",
    ),
]
PositiveBy = Annotated[
    str | None,
    typer.Option("--positive-by", help="--match: rows sharing this column's value are positives"),
]
Anchor = Annotated[
    str | None,
    typer.Option(
        "--anchor", help="--match of 3+ columns: pair each with this one (else all pairs)"
    ),
]
Inputs = Annotated[str | None, typer.Option("--inputs", help="input columns, comma-separated")]
Fusion = Annotated[str | None, typer.Option("--fusion", help="concat, late or attention")]
Epochs = Annotated[int | None, typer.Option("--epochs", help="maximum epochs")]
MaxTime = Annotated[str | None, typer.Option("--max-time", help="minutes, or DD:HH:MM:SS")]
Seed = Annotated[int | None, typer.Option("--seed", help="random seed")]
ModalityDropout = Annotated[
    str | None,
    typer.Option(
        "--modality-dropout",
        help="drop whole inputs while training: a chance (0.3) or COLUMN=CHANCE pairs",
    ),
]
Strict = Annotated[
    bool | None, typer.Option("--strict/--no-strict", help="stop at the first bad cell or file")
]
Augment = Annotated[
    bool | None,
    typer.Option("--augment/--no-augment", help="random shifts (images), SpecAugment (audio)"),
]
Compile = Annotated[
    bool | None,
    typer.Option("--compile/--no-compile", help="torch.compile the model for training"),
]
Workers = Annotated[
    int | None,
    typer.Option("--workers", min=1, help="processes decoding files (default: every core)"),
]
Devices = Annotated[
    int | None, typer.Option("--devices", min=1, help="training processes on this machine")
]
NumNodes = Annotated[
    int | None, typer.Option("--num-nodes", min=1, help="machines training together (ddp)")
]
Strategy = Annotated[
    str | None,
    typer.Option(
        "--strategy",
        help="ddp: each process trains on its share of the rows; fsdp (GPUs only): the same, "
        "with the weights sharded across processes",
    ),
]
Encoder = Annotated[
    list[str] | None,
    typer.Option(
        "--encoder",
        help="KIND|COLUMN=SOURCE: hf:NAME, timm:NAME, a saved folder or an encoder name "
        "(repeatable), e.g. text=hf:bert-base-uncased",
    ),
]
EncoderMode = Annotated[
    list[str] | None,
    typer.Option(
        "--encoder-mode", help="frozen, finetune or lora, for all pretrained encoders or KIND=MODE"
    ),
]
Decoder = Annotated[
    list[str] | None,
    typer.Option(
        "--decoder",
        help="COLUMN=SOURCE: a text target written by a pretrained decoder, hf:NAME or a saved "
        "folder (repeatable), e.g. caption=hf:gpt2",
    ),
]
Preset = Annotated[
    str | None,
    typer.Option("--preset", help="fast (from scratch) or accurate (pretrained encoders)"),
]
GradientCheckpointing = Annotated[
    bool | None,
    typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="pretrained encoders that train: less memory, more compute",
    ),
]


class Engine(StrEnum):
    """Where `predict` and `embed` run: this process, or the actors of a Ray cluster."""

    local = "local"
    ray = "ray"


EngineOption = Annotated[
    Engine, typer.Option("--engine", help="local: this process; ray: actors of a Ray cluster")
]
TrainEngine = Annotated[
    Engine,
    typer.Option(
        "--engine",
        help="local: processes started here (--devices) or by torchrun/srun; ray: --devices "
        "Ray Train workers on a Ray cluster",
    ),
]
Address = Annotated[
    str | None,
    typer.Option(
        "--address", help="--engine ray: the cluster's HOST:PORT (default: start one here)"
    ),
]
RayWorkers = Annotated[
    int | None,
    typer.Option(
        "--workers", min=1, help="--engine ray: actors, each holding the model (one per node)"
    ),
]


def check_engine(engine: Engine, address: str | None, workers: int | None) -> None:
    """--address and --workers say where and how wide a Ray run goes: nothing without one."""
    if engine is Engine.local and (address is not None or workers is not None):
        raise ConfigError("--address and --workers are for --engine ray")


# Decoding of generated targets (text), shared by `predict` and `evaluate`. None: as trained.
Beam = Annotated[int | None, typer.Option("--beam", min=1, help="text targets: beam width")]
NBest = Annotated[
    int | None, typer.Option("--nbest", min=1, help="text targets: hypotheses per row (<= beam)")
]
LengthPenalty = Annotated[
    float | None,
    typer.Option("--length-penalty", help="text targets: beam score = log p / length ** this"),
]
MaxLength = Annotated[
    int | None, typer.Option("--max-length", min=1, help="text targets: tokens generated at most")
]


# Sampling of generated images; checked by the model (a bad value is a one-line error).
Guidance = Annotated[
    float | None,
    typer.Option("--guidance", help="image targets: classifier-free guidance (0: unconditional)"),
]
Steps = Annotated[int | None, typer.Option("--steps", help="image targets: Euler steps a sample")]
Seed = Annotated[int | None, typer.Option("--seed", help="image, music targets: sampling seed")]
Temperature = Annotated[
    float | None,
    typer.Option("--temperature", help="music targets: sampling temperature (0: greedy)"),
]
TopK = Annotated[
    int | None, typer.Option("--top-k", help="music targets: sample among the k likeliest (0: all)")
]
Opening = Annotated[
    str | None,
    typer.Option("--opening", help="music targets: a music file whose first bar opens each piece"),
]


def decoding(
    beam: int | None,
    nbest: int | None,
    length_penalty: float | None,
    max_length: int | None,
    guidance: float | None = None,
    steps: int | None = None,
    seed: int | None = None,
    **more: Any,
) -> dict[str, Any]:
    """The decoding options given on the command line, as `Model.set_decoding` takes them
    (`more`: others under their own names)."""
    return {
        "beam": beam,
        "nbest": nbest,
        "length_penalty": length_penalty,
        "generate_length": max_length,
        "guidance": guidance,
        "steps": steps,
        "seed": seed,
    } | more
