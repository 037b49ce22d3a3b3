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


def fit_and_score(train, test, cache, fusion, probability) -> dict[str, float]:
    """Accuracy on the test rows with only each input (the other removed); both must learn
    the task with both inputs."""
    table = read_table(test)
    config = tiny_config(max_epochs=8, patience=8, modality_dropout=probability)
    model = Model(target="label", inputs=INPUTS, fusion=fusion, config=config, cache=cache)
    model = seeded_fit(model, train)
    runner, known = Runner(model, model.encode(table)), truths(model, table)
    assert scores(model, runner.outputs(), known)["label"] >= 0.9, "it learns the task"
    return single_input_scores(model, table)


def test_modality_dropout_helps_when_an_input_is_missing(redundant, cache):
    """What the README says: with attention fusion, P = 0.5 keeps >= 90% with either input
    removed; P = 0 falls to chance (half the test rows are squares) with only the number."""
    train, test = redundant
    without = fit_and_score(train, test, cache, "attention", 0.0)
    with_dropout = fit_and_score(train, test, cache, "attention", 0.5)
    assert min(with_dropout.values()) >= 0.9, with_dropout
    assert without["hint"] <= 0.6, without
    assert without["picture"] >= 0.9, without  # it leaned on the picture alone


def test_concat_copes_with_a_missing_input_without_dropout(redundant, cache):
    """The README's other claim: concat keeps >= 90% with either input removed at P = 0."""
    train, test = redundant
    assert min(fit_and_score(train, test, cache, "concat", 0.0).values()) >= 0.9


TRAIN_ARGS = ["--target", "label", "--inputs", "picture,hint", "--epochs", "1"]


@pytest.mark.parametrize(
    "given, saved", [("0.4", 0.4), ("hint=0.5", {"hint": 0.5})], ids=["every", "per-input"]
)
def test_train_command_takes_modality_dropout(redundant, tmp_path, given, saved):
    train, _ = redundant
    out = tmp_path / "m"
    result = CliRunner().invoke(
        app,
        ["train", str(train), *TRAIN_ARGS, "--modality-dropout", given]
        + ["--out", str(out), "--no-report"],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["train"]["modality_dropout"] == saved
    assert not (out / "report.html").exists()


def test_a_chance_for_a_column_that_is_not_an_input_is_an_error(redundant, tmp_path):
    train, _ = redundant
    wrong = CliRunner().invoke(
        app,
        ["train", str(train), *TRAIN_ARGS, "--modality-dropout", "hnt=0.5"]
        + ["--out", str(tmp_path / "n")],
    )
    assert wrong.exit_code != 0 and "hnt" in wrong.output and "Traceback" not in wrong.output
    assert not (tmp_path / "n").exists(), "stopped before preparing anything"
