"""Comparison, Shapley contributions and group scores of a text target, with WER as the metric:
a caption whose first word only one input knows and whose second word only the other knows."""

import numpy as np
import pandas as pd
import pytest

from polymodal import Model
from polymodal.config import Config
from polymodal.data.table import read_table
from polymodal.evaluation.compare import compare
from polymodal.explain.groups import group_metrics
from polymodal.explain.scoring import truths
from polymodal.explain.shapley import modality_contributions

COLOURS = ["red", "blue", "green", "pink", "grey"]
SHAPES = ["circle", "square", "star", "heart", "cross"]


def two_part_table(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    """`colour` (a category) names the caption's first word, `note` (text) its second."""
    rng = np.random.default_rng(seed)
    colour, shape = rng.choice(COLOURS, rows), rng.choice(SHAPES, rows)
    frame = pd.DataFrame(
        {
            "colour": colour,
            "note": [f"it is a {s}" for s in shape],
            "caption": [f"{c} {s}" for c, s in zip(colour, shape, strict=True)],
            "half": np.where(np.arange(rows) % 2, "odd", "even"),
        }
    )
    frame["split"] = np.where(np.arange(rows) >= rows - 60, "test", "train")
    return frame


CONFIG = {
    "targets": [{"column": "caption", "task": "text", "options": {"layers": 1}}],
    "inputs": ["colour", "note"],
    "columns": {"note": {"kind": "text"}},
    # Shapley values by masking presume a model that learned what a missing input means: with
    # no modality dropout, one input alone gave WER 1.1, worse than none, on some CPUs and seeds
    "train": {
        "max_epochs": 30,
        "batch_size": 32,
        "lr": 5e-3,
        "patience": 50,
        "modality_dropout": 0.25,
    },
}


@pytest.fixture(scope="module")
def fused():
    return Model(config=Config.model_validate(CONFIG)).fit(two_part_table())


def test_compare_scores_text_by_wer_lower_is_better():
    result = compare(
        two_part_table(), "caption", Config.model_validate(CONFIG), seeds=1, fusions=["concat"],
        log=lambda _line: None,
    )  # fmt: skip
    assert (result["metric"], result["higher_is_better"]) == ("wer", False)
    wer = {row["name"]: row["mean"] for row in result["configurations"]}
    assert wer["fusion: concat"] < 0.15, wer
    assert min(wer["tabular only"], wer["text only"]) > 0.35, wer  # each knows one word of two
    gain = result["modality_gain"]
    assert gain["best_multimodal"] == "fusion: concat"
    assert gain["gain"] == pytest.approx(
        min(wer["tabular only"], wer["text only"]) - wer["fusion: concat"]
    )


def test_shapley_contributions_share_the_wer_between_the_inputs(fused):
    table = read_table(two_part_table(seed=1).tail(60))
    truth = truths(fused, table)["caption"]
    result = modality_contributions(fused, fused.encode(table), "caption", truth, np.arange(3))
    assert result.metric == "neg_wer" and result.exact
    total = sum(result.metric_contributions.values())
    assert total == pytest.approx(result.metric_all - result.metric_none)
    assert result.metric_all > -0.15  # WER below 0.15 with both inputs
    for name in ("colour", "note"):  # each buys about half of the words
        assert result.metric_contributions[name] > 0.25, result.metric_contributions


def test_group_by_scores_each_group_by_wer(fused):
    frame = two_part_table(seed=2).tail(60)
    frame.loc[frame["half"] == "odd", "colour"] = ""  # odd rows lose their colour
    report = group_metrics(fused, frame, "half")["caption"]
    scores = {group["group"]: group["score"] for group in report["groups"]}
    assert report["metric"] == "neg_wer"
    assert scores["even"] > -0.15 and scores["odd"] < scores["even"] - 0.25
    assert report["gap"] == pytest.approx(
        {"value": scores["even"] - scores["odd"], "best": "even", "worst": "odd"}
    )
