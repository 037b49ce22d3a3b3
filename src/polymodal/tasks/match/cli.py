"""How the match task's command-line options edit a config: `--match`, `--positive-by` and
`--anchor` (`polymodal.options` lists them with every other option)."""

from __future__ import annotations

from typing import Any

from polymodal.config import Config, ConfigError, TargetConfig

TASK = "match"  # the name `MatchTask` registers under; light, so the CLI can read it


def add_match(config: Config, value: str) -> None:
    """`--match image=caption[=audio]`: a match target over those columns (the task checks
    them when fitted); it replaces a match target the config named."""
    columns = [part.strip() for part in value.split("=") if part.strip()]
    if len(columns) < 2:
        raise ConfigError(
            f"--match {value}: name two or more columns joined by '=', e.g. image=caption"
        )
    others = [target for target in config.targets if target.task != TASK]
    match = TargetConfig(column="=".join(columns), task=TASK, options={"columns": columns})
    config.targets = [*others, match]


def set_positive_by(config: Config, value: str) -> None:
    """`--positive-by label`: rows sharing that column's value are positives."""
    set_option(config, "positive_by", value)


def set_anchor(config: Config, value: str) -> None:
    """`--anchor image`: bind every column to that one instead of all pairs."""
    set_option(config, "anchor", value)


def set_option(config: Config, key: str, value: Any) -> None:
    """A setting of the match target, which must be named (by `--match` or the config)."""
    matches = [target for target in config.targets if target.task == TASK]
    if not matches:
        flag = "--" + key.replace("_", "-")
        raise ConfigError(f"{flag} {value}: only with --match (or a match target)")
    for target in matches:
        target.options[key] = value
