"""Zero-shot labels from a match model: prototypes from class names or from examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from polymodal import Model
from polymodal.cli import app
from polymodal.data.cache import FeatureCache
from polymodal.data.problems import BadInputError
from polymodal.search.zero_shot import (
    accuracy,
    class_prototypes_from_examples,
    class_prototypes_from_names,
    text_input,
    zero_shot,
)
from polymodal.tasks.match import match_target
from tests.media import paired_classes, tiny_config

runner = CliRunner()
NAMES = ["red circle", "green square", "blue circle", "yellow square"]  # the notes' words
LABELS = sorted(name.replace(" ", "-") for name in NAMES)  # the label column's values
SCORES = [f"zero_shot_score_{label}" for label in LABELS]


def invoke(*args: object):
    return runner.invoke(app, [str(arg) for arg in args])


def refused(*args: object) -> str:
    """The one-line error of a refused command."""
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result.output.strip()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """192 rows (every fifth a test row): 96 are too few for the small CNN to tell a circle
    from a square."""
    path = paired_classes(tmp_path_factory.mktemp("paired"), rows=192)
    frame = pd.read_csv(path)
    for split in ("train", "test"):
        frame[frame.split == split].to_csv(path.parent / f"{split}.csv", index=False)
    return path


@pytest.fixture(scope="module")
def model_dir(data, tmp_path_factory) -> Path:
    """Module fixtures outlive each test's own cache (tests/conftest.py): pass one explicitly.
    `note` (four distinct phrases) is inferred to be a category: class names reach it through
    a template that fills in one of its values ("a {}")."""
    config = tiny_config(max_epochs=30, patience=30, augment=True)
    config.targets = [match_target(["image", "note"], positive_by="label")]
    out = tmp_path_factory.mktemp("model") / "m"
    Model(config=config, cache=FeatureCache(tmp_path_factory.mktemp("cache"))).fit(data, out=out)
    return out


@pytest.fixture(scope="module")
def model(model_dir) -> Model:
    return Model.load(model_dir)


@pytest.fixture(scope="module")
def test_rows(data) -> pd.DataFrame:
    return pd.read_csv(data.parent / "test.csv")


# ----------------------------------------------------------------- the functions
def test_class_names_label_test_images_well_above_chance(model, data, test_rows):
    prototypes = class_prototypes_from_names(model, NAMES, ["a {}"])
    assert prototypes.shape == (4, model.config.model.dim)
    assert np.allclose(np.linalg.norm(prototypes, axis=1), 1.0, atol=1e-5)
    scored = zero_shot(model, data.parent / "test.csv", "image", NAMES, prototypes)
    truth = test_rows.label.str.replace("-", " ")
    share, counted = accuracy(scored, truth)
    assert counted == len(test_rows) and set(truth) == set(NAMES)
    assert share >= 0.75, scored.assign(truth=truth)  # chance: 0.25


def test_examples_label_test_images_well_above_chance(model, data, test_rows):
    classes, prototypes = class_prototypes_from_examples(
        model, data.parent / "train.csv", "label", "image"
    )
    assert classes == LABELS and prototypes.shape == (4, model.config.model.dim)
    scored = zero_shot(model, data.parent / "test.csv", "image", classes, prototypes)
    assert accuracy(scored, test_rows.label)[0] >= 0.75, scored.assign(truth=test_rows.label)


def test_a_row_without_a_vector_gets_no_label_and_nan_scores(model, data, test_rows):
    frame = test_rows.head(4).assign(image=lambda f: [str(data.parent / p) for p in f.image])
    frame.loc[2, "image"] = None
    prototypes = class_prototypes_from_names(model, NAMES, ["a {}"])
    scored = zero_shot(model, frame, "image", NAMES, prototypes)
    assert list(scored.columns) == ["zero_shot_predicted"] + [f"zero_shot_score_{n}" for n in NAMES]
    assert scored.zero_shot_predicted[2] is None and scored.iloc[2, 1:].isna().all()
    kept = scored.drop(index=2)
    assert kept.zero_shot_predicted.isin(NAMES).all()
    assert kept.iloc[:, 1:].abs().le(1 + 1e-5).all().all()
    best = kept.iloc[:, 1:].to_numpy().argmax(axis=1)
    assert kept.zero_shot_predicted.tolist() == [NAMES[i] for i in best]


def test_examples_skip_rows_without_a_vector_and_name_a_class_left_empty(model, data):
    frame = pd.read_csv(data.parent / "train.csv").head(8)
    frame["image"] = [str(data.parent / p) for p in frame.image]
    frame.loc[frame.label == "red-circle", "image"] = None
    with pytest.raises(BadInputError, match="red-circle"):
        class_prototypes_from_examples(model, frame, "label", "image")
    classes, _ = class_prototypes_from_examples(model, frame[frame.image.notna()], "label", "image")
    assert classes == ["blue-circle", "green-square", "yellow-square"]
    with pytest.raises(BadInputError, match=r"no label column 'kind' \(columns: image, sound"):
        class_prototypes_from_examples(model, frame, "kind", "image")


def test_the_text_input_is_the_chosen_or_the_only_one():
    assert text_input({"image": "image", "note": "text"}, None) == "note"
    assert text_input({"a": "text", "b": "text"}, "b") == "b"
    with pytest.raises(BadInputError, match=r"several text inputs .*\(a, b\).*--text-column"):
        text_input({"a": "text", "b": "text"}, None)
    with pytest.raises(BadInputError, match=r"no text input .*image \(image\).*--examples"):
        text_input({"image": "image"}, None)


def test_a_class_name_the_input_cannot_read_is_refused(model):
    with pytest.raises(
        BadInputError, match=r"input 'note': class name text 'a green circle': unknown category"
    ):
        class_prototypes_from_names(model, ["red circle", "green circle"], ["a {}"])


@pytest.mark.parametrize(
    ("classes", "templates", "message"),
    [
        ([], ["{}"], "no class names"),
        (["red circle", "red circle"], ["{}"], "given twice: red circle"),
        (NAMES, ["a photo"], "has no {} for the class name"),
        (NAMES, ["a {} {x}"], "literal brace"),
    ],
)
def test_bad_class_lists_and_templates_are_refused(model, classes, templates, message):
    with pytest.raises(BadInputError, match=message.replace("{}", r"\{\}")):
        class_prototypes_from_names(model, classes, templates)


# ----------------------------------------------------------------------- the CLI
def test_predict_zero_shot_writes_the_scores_and_the_accuracy(model_dir, data, tmp_path):
    output = tmp_path / "labels.csv"
    test = data.parent / "test.csv"
    args = ("predict", model_dir, test, "-o", output, "--zero-shot", "image", "--truth", "label")
    result = invoke(*args, "--examples", data.parent / "train.csv")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(output)
    assert list(frame.columns) == ["row", "zero_shot_predicted", *SCORES]
    assert frame.row.tolist() == list(range(len(pd.read_csv(test))))
    printed = " ".join(result.output.split())
    share = accuracy(frame, pd.read_csv(test).label)[0]
    assert f"{len(frame)} zero-shot labels written" in printed
    assert f"accuracy against 'label': {share:.3f} ({len(frame)} rows)" in printed

    assert "--overwrite" in refused(*args, "--labels", ",".join(NAMES))
    result = invoke(*args, "--labels", ",".join(NAMES), "--template", "a {}", "--overwrite")
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(output).columns)[2:] == [f"zero_shot_score_{n}" for n in NAMES]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--zero-shot", "nope", "--labels", "a,b"], "no input named 'nope'; the model's inputs: image (image), note (category)"),
        (["--zero-shot", "image"], "exactly one of --labels"),
        (["--zero-shot", "image", "--labels", "a", "--examples", "x.csv"], "exactly one of"),
        (["--zero-shot", "image", "--labels", ","], "no class names"),
        (["--zero-shot", "image", "--labels", "a", "--template", "a photo"], "has no {}"),
        (["--zero-shot", "image", "--labels", "a", "--text-column", "image"], "not a text input"),
        (["--zero-shot", "image", "--labels", "a", "--truth", "kind"], "no --truth column 'kind'"),
        (["--labels", "a,b"], "need --zero-shot"),
        (["--zero-shot", "image", "--labels", "a", "--resume"], "not --zero-shot"),
    ],
)  # fmt: skip
def test_predict_zero_shot_refuses_bad_options_in_one_line(
    model_dir, data, tmp_path, options, message
):
    output = tmp_path / "labels.csv"
    assert message in refused("predict", model_dir, data, "-o", output, *options)
    assert not output.exists()


def test_predict_zero_shot_names_a_missing_example_label(model_dir, data, tmp_path):
    train = data.parent / "train.csv"
    options = ["--zero-shot", "image", "--examples", train, "--example-label", "kind"]
    message = refused("predict", model_dir, data, "-o", tmp_path / "out.csv", *options)
    assert f"{train}: no label column 'kind' (columns: image, sound, note, label, split)" in message
