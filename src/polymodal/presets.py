"""Named starting points for the encoders.

`fast` trains every encoder from scratch: offline, small, CPU-friendly (the default).
`accurate` starts each modality from a pretrained encoder (frozen, so its embeddings are
computed once and cached); README.md lists their sizes. Settings the user gives win.
"""

from __future__ import annotations

from polymodal.config import Config, ConfigError, EncoderChoice, EncoderMode

ACCURATE = {
    "text": "hf:google/electra-base-discriminator",  # 110M parameters, 440 MB
    "image": "timm:convnext_tiny.fb_in22k_ft_in1k",  # 28.6M parameters, 115 MB
    "audio": "hf:MIT/ast-finetuned-audioset-10-10-0.4593",  # 86.6M parameters, 346 MB
    "video": "timm:convnext_tiny.fb_in22k_ft_in1k",  # the image model on each frame
}
PRESETS = {"fast": {}, "accurate": ACCURATE}


def configure_encoders(
    config: Config,
    encoders: list[str],
    preset: str | None,
    modes: list[str],
    gradient_checkpointing: bool = False,
) -> None:
    """The command line's encoder options, in order: named encoders, then the preset for the
    kinds still unset, then modes and checkpointing for what was chosen."""
    apply_encoder_options(config, encoders, [])
    if preset:
        add_preset(config, preset)
    apply_encoder_options(config, [], modes)
    if gradient_checkpointing:
        set_gradient_checkpointing(config, True)


def apply_preset(config: Config, name: str) -> Config:
    """A copy of `config` with the preset's encoder for each kind it does not set yet.

    >>> model = Model(target="label", config=apply_preset(load_config("my.yaml"), "accurate"))
    """
    updated = config.model_copy(deep=True)
    add_preset(updated, name)
    return updated


def add_preset(config: Config, name: str) -> None:
    """`apply_preset` in place (the command line edits its own copy)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; presets: {', '.join(PRESETS)}")
    for kind, source in PRESETS[name].items():
        config.model.encoders.setdefault(kind, EncoderChoice(source=source))


def set_gradient_checkpointing(config: Config, enabled: bool) -> None:
    """On (or off) for every encoder set so far; only pretrained ones that train use it."""
    for name in list(config.model.encoders):
        choice = config.model.encoder_choice(name, name)
        config.model.encoders[name] = choice.model_copy(update={"gradient_checkpointing": enabled})


def apply_encoder_options(config: Config, encoders: list[str], modes: list[str]) -> None:
    """`--encoder text=hf:bert-base-uncased` (column or kind = source) and `--encoder-mode lora`
    (every pretrained encoder) or `--encoder-mode text=finetune` (one)."""
    for option in encoders:
        key, source = split_option(option, "--encoder", "text=hf:bert-base-uncased")
        config.model.encoders[key] = EncoderChoice(source=source)
    for option in modes:
        key, mode = (
            split_option(option, "--encoder-mode", "lora") if "=" in option else ("", option)
        )
        if mode not in EncoderMode.__args__:
            raise ConfigError(
                f"--encoder-mode {option}: modes are {', '.join(EncoderMode.__args__)}"
            )
        keys = [key] if key else list(config.model.encoders)
        for name in keys:
            choice = config.model.encoder_choice(name, name)
            if choice is None:
                raise ConfigError(f"--encoder-mode {option}: no encoder set for '{name}'")
            config.model.encoders[name] = choice.model_copy(update={"mode": mode})


def split_option(option: str, flag: str, example: str) -> tuple[str, str]:
    key, _, value = option.partition("=")
    if not key.strip() or not value.strip():
        raise ConfigError(f"{flag} {option}: expected NAME=VALUE, e.g. {flag} {example}")
    return key.strip(), value.strip()
