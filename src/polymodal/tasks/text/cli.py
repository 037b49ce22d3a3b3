"""How the text task's command-line option `--decoder` edits a config (`polymodal.options`
lists it with every other option)."""

from __future__ import annotations

from polymodal.config import Config, ConfigError
from polymodal.presets import split_option

TASK = "text"  # the name `TextTask` registers under; light, so the CLI can read it


def set_decoders(config: Config, values: list[str]) -> None:
    """`--decoder caption=hf:gpt2`: the named target is text, written by that pretrained
    decoder (a hub name or a saved folder)."""
    targets = {target.column: target for target in config.targets}
    for option in values:
        column, source = split_option(option, "--decoder", "caption=hf:gpt2")
        target = targets.get(column)
        if target is None:
            raise ConfigError(f"--decoder {option}: '{column}' is not a target (see --target)")
        target.task = target.task or TASK  # another task refuses the option when fitted
        target.options["decoder"] = source
