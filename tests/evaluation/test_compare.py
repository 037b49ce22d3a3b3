"""compare: every unimodal model, every fusion, an ensemble, and the modality gain."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from polymodal.cli import app
from polymodal.evaluation.compare import Configuration, RunResult, modality_gain, modality_groups
from tests.media import shapes_and_tones
from tests.test_cli import write_config


def test_number_and_category_columns_form_one_tabular_group():
    kinds = {"a": "image", "b": "number", "c": "category", "d": "audio"}
    assert modality_groups(kinds) == {"image": ["a"], "tabular": ["b", "c"], "audio": ["d"]}


def test_gain_is_best_multimodal_minus_best_unimodal_with_its_error():
    def config(name, family, scores):
        item = Configuration(name, family, [])
        item.runs = [RunResult(i, s, 1.0, 1) for i, s in enumerate(scores)]
        return item

    gain = modality_gain(
        [
            config("image only", "unimodal", [0.6, 0.62, 0.64]),
            config("audio only", "unimodal", [0.7, 0.72, 0.74]),
            config("fusion: concat", "fusion", [0.9, 0.91, 0.92]),
        ],
        higher=True,
    )
    assert gain["best_unimodal"] == "audio only" and gain["best_multimodal"] == "fusion: concat"
    assert np.isclose(gain["gain"], 0.91 - 0.72)
    assert np.isclose(gain["standard_error"], np.sqrt(0.02**2 / 3 + 0.01**2 / 3))
    assert np.isclose(gain["error_ratio"], 0.09 / 0.28)


def test_compare_command_end_to_end(tmp_path):
    data = shapes_and_tones(tmp_path, rows=40)
    config = write_config(tmp_path)
    out = tmp_path / "cmp"
    result = CliRunner().invoke(
        app,
        ["compare", str(data), "--target", "label", "--seeds", "2", "--config", config,
         "--inputs", "picture,sound,size", "--fusions", "concat,late", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "comparison.json").read_text())
    names = [row["name"] for row in report["configurations"]]
    assert names == [
        "image only", "audio only", "tabular only", "fusion: concat", "fusion: late",
        "ensemble of unimodal",
    ]  # fmt: skip
    rows = report["scored_rows"]
    means = {}
    for row in report["configurations"]:
        scores = [run["score"] for run in row["runs"]]
        assert len(scores) == 2
        for score in scores:  # an accuracy over the scored rows: a whole number of them
            assert score * rows == pytest.approx(round(score * rows), abs=1e-6)
        assert row["mean"] == pytest.approx(np.mean(scores))
        means[row["name"]] = row["mean"]
    unimodal = {n: m for n, m in means.items() if n.endswith(" only")}
    multimodal = {n: m for n, m in means.items() if n not in unimodal}
    gain = report["modality_gain"]
    assert means[gain["best_unimodal"]] == max(unimodal.values())
    assert means[gain["best_multimodal"]] == max(multimodal.values())
    assert gain["gain"] == pytest.approx(max(multimodal.values()) - max(unimodal.values()))
    page = (out / "comparison.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "http" not in page
    assert "modality gain" in result.output
