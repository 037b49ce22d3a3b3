"""Options reach the config through one table; `compare` takes `train`'s; presets from Python."""

import pytest
import typer
import yaml
from typer.testing import CliRunner

from polymodal.cli import app
from polymodal.config import Config, ConfigError, EncoderChoice, TargetConfig, load_config
from polymodal.options import (
    CONFIG_OPTIONS,
    apply_options,
    flag,
    parse_modality_dropout,
    settings_from,
)

GIVEN = {
    "target": ("label,mood", None),
    "inputs": ("image, sound", ["image", "sound"]),
    "fusion": ("attention", None),
    "epochs": (7, None),
    "max_time": ("2.5", None),
    "seed": (11, None),
    "modality_dropout": (0.3, None),
    "strict": (True, None),
    "augment": (True, None),
}


def field(config: Config, path: str):
    value = config
    for name in path.split("."):
        value = getattr(value, name)
    return value


@pytest.mark.parametrize("name", sorted(GIVEN))
def test_each_option_lands_in_its_field(name):
    value, expected = GIVEN[name]
    config = apply_options(Config(), {name: value})
    found = field(config, CONFIG_OPTIONS[name].path)
    if name == "target":
        assert [target.column for target in found] == ["label", "mood"]
    else:
        assert found == (value if expected is None else expected)
    untouched = Config().model_dump()
    untouched.pop(CONFIG_OPTIONS[name].path.split(".")[0])
    assert {k: v for k, v in config.model_dump().items() if k in untouched} == untouched


def test_encoder_options_apply_in_order():
    config = apply_options(
        Config(),
        {
            "encoder": ["text=hf:bert-base-uncased"],
            "preset": "accurate",
            "encoder_mode": ["image=lora"],
            "gradient_checkpointing": True,
        },
    )
    encoders = config.model.encoders
    assert encoders["text"].source == "hf:bert-base-uncased", "a named encoder beats the preset"
    assert encoders["image"].source.startswith("timm:") and encoders["image"].mode == "lora"
    assert all(choice.gradient_checkpointing for choice in encoders.values())
    off = apply_options(config, {"gradient_checkpointing": False})
    assert not any(choice.gradient_checkpointing for choice in off.model.encoders.values())


def test_options_not_given_keep_the_yaml_and_no_flags_unset_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"strict": True, "augment": True, "seed": 5}}))
    kept = settings_from(path, {"strict": None, "augment": None, "seed": None, "encoder": []})
    assert kept.train.strict and kept.train.augment and kept.train.seed == 5
    unset = settings_from(path, {"strict": False, "augment": False})
    assert not unset.train.strict and not unset.train.augment and unset.train.seed == 5


def test_the_command_line_parses_no_flags_into_the_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"strict": True, "augment": True}}))
    command = typer.main.get_command(app).commands["train"]
    args = ["t.csv", "--target", "y", "--config", str(path), "--no-strict", "--epochs", "3"]
    params = command.make_context("train", args).params
    settings = settings_from(params["config"], params)
    assert not settings.train.strict and settings.train.augment
    assert settings.train.max_epochs == 3 and settings.targets[0].column == "y"


def test_the_given_config_is_never_changed():
    config = Config(targets=[TargetConfig(column="label", weight=2.0)])
    config.model.encoders["text"] = EncoderChoice(source="hf:bert-base-uncased")
    before = config.model_dump()
    options = {name: value for name, (value, _) in GIVEN.items()}
    updated = apply_options(config, {**options, "preset": "accurate", "encoder_mode": ["lora"]})
    assert config.model_dump() == before
    assert updated.targets[0].weight == 2.0, "a target named again keeps its settings"
    assert updated.model.encoders["text"].mode == "lora"


def test_bad_values_name_the_option():
    with pytest.raises(ConfigError, match="--epochs"):
        apply_options(Config(), {"epochs": "many"})
    with pytest.raises(ConfigError, match="unknown options"):
        apply_options(Config(), {"epoch": 3})


def command_flags(name: str) -> set[str]:
    command = typer.main.get_command(app).commands[name]
    return {
        option
        for param in command.params
        for option in (*param.opts, *param.secondary_opts)
        if option.startswith("--")
    }


# where and how one training runs, not a setting compared across runs (compare trains here)
TRAIN_ONLY = {"--valid", "--resume", "--no-resume", "--report", "--no-report"}
TRAIN_ONLY |= {"--engine", "--address"}


def test_compare_takes_every_config_option_of_train():
    train, compare = command_flags("train"), command_flags("compare")
    mapped = {flag(name) for name in CONFIG_OPTIONS} | {"--config"}
    assert mapped <= train and mapped <= compare
    assert train - TRAIN_ONLY <= compare, train - TRAIN_ONLY - compare
    help_text = CliRunner().invoke(app, ["compare", "--help"], env={"COLUMNS": "200"}).output
    for option in sorted(train - TRAIN_ONLY):
        assert option in help_text


def test_presets_from_the_python_api(tmp_path):
    from polymodal import apply_preset

    config = load_config(None)
    config.model.encoders["image"] = EncoderChoice(source="image_cnn")
    accurate = apply_preset(config, "accurate")
    assert accurate is not config and set(config.model.encoders) == {"image"}
    assert accurate.model.encoders["image"].source == "image_cnn", "the user's choice wins"
    assert accurate.model.encoders["text"].source.startswith("hf:")
    assert apply_preset(config, "fast").model.encoders == config.model.encoders
    with pytest.raises(ConfigError, match="fast, accurate"):
        apply_preset(config, "slow")


def test_modality_dropout_takes_one_chance_or_one_per_column():
    assert parse_modality_dropout("0.3") == 0.3
    assert parse_modality_dropout(" video=0.5, audio=0.1") == {"video": 0.5, "audio": 0.1}
    config = apply_options(Config(), {"modality_dropout": "video=0.5"})
    assert config.train.modality_dropout == {"video": 0.5}
    for bad in ("x", "video=", "=0.3", "video=0.5,audio", ""):
        with pytest.raises(ConfigError, match="COLUMN=CHANCE"):
            parse_modality_dropout(bad)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Config.model_validate({"train": {"modality_dropout": {"video": 1.5}}})
