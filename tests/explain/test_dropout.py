"""Training for robustness: modality dropout (`--modality-dropout P`, `train.modality_dropout`)
teaches the model to predict with an input missing."""

import json

import pytest
from typer.testing import CliRunner

from polymodal import Model
from polymodal.cli import app
from polymodal.data.table import read_table
from polymodal.explain.runner import Runner
from polymodal.explain.scoring import scores, truths
from tests.explain.conftest import seeded_fit
from tests.explain.squares import squares
from tests.media import tiny_config

INPUTS = ["picture", "hint"]


@pytest.fixture(scope="module")
def redundant(tmp_path_factory):
    """Picture and number each tell the label alone (bright square / hint near 1)."""
    folder = tmp_path_factory.mktemp("redundant")
    train = squares(folder / "train", rows=96, hint_noise=0.1)
    test = squares(folder / "test", rows=64, seed=1, hint_noise=0.1)
    return train, test


def single_input_scores(model, table):
    """Accuracy with each input removed in turn (only the other one present)."""
    runner, known = Runner(model, model.encode(table)), truths(model, table)
    return {name: scores(model, runner.outputs(keep={name}), known)["label"] for name in INPUTS}


def test_modality_dropout_helps_when_an_input_is_missing(redundant, cache):
    train, test = redundant
    table = read_table(test)
    found = {}
    for probability in (0.0, 0.5):  # attention: concat already copes with a missing input here
        config = tiny_config(max_epochs=8, patience=8, modality_dropout=probability)
        model = Model(target="label", inputs=INPUTS, fusion="attention", config=config, cache=cache)
        model = seeded_fit(model, train)
        runner, known = Runner(model, model.encode(table)), truths(model, table)
        assert scores(model, runner.outputs(), known)["label"] >= 0.9, "both learn the task"
        found[probability] = single_input_scores(model, table)
    worst_without, worst_with = min(found[0.0].values()), min(found[0.5].values())
    assert worst_with >= 0.9, found
    assert worst_with >= worst_without + 0.2, found


def test_train_command_takes_modality_dropout(redundant, tmp_path):
    train, _ = redundant
    args = ["train", str(train), "--target", "label", "--inputs", "picture,hint", "--epochs", "1"]
    out = tmp_path / "m"
    result = CliRunner().invoke(
        app, [*args, "--modality-dropout", "0.4", "--out", str(out), "--no-report"]
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["train"]["modality_dropout"] == 0.4
    assert not (out / "report.html").exists()
