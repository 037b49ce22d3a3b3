"""Captum attributions inside each input, and what `polymodal explain` writes."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer
from typer.testing import CliRunner

from polymodal.cli import app
from polymodal.data.table import read_table
from polymodal.explain import explain
from polymodal.explain.runner import Runner
from tests.explain.squares import QUADRANT
from tests.media import write_mp4


def test_image_attribution_mass_lies_in_the_square_quadrant(image_model, square_data):
    explanation = explain(image_model, square_data, rows=list(range(0, 40, 2)))  # squares
    found = [row for row in explanation.rows if row.prediction == "square"]
    assert len(found) >= 15, "the model finds most squares"
    inside, total, shares = 0.0, 0.0, []
    for row in found:
        (item,) = row.attributions
        assert item.kind == "image" and item.attributions.shape == (1, 16, 16)
        mass = np.abs(item.attributions).sum(axis=0)
        inside += mass[:QUADRANT, :QUADRANT].sum()
        total += mass.sum()
        shares.append(mass[:QUADRANT, :QUADRANT].sum() / mass.sum())
        grid = np.asarray(item.summary["mass_4x4"])
        assert grid.sum() == pytest.approx(1.0, abs=1e-3)
        assert grid[:2, :2].sum() == pytest.approx(shares[-1], abs=1e-3)
    assert inside / total >= 0.7, f"only {inside / total:.0%} of |attribution| in the quadrant"
    assert np.median(shares) >= 0.7


def test_integrated_gradients_are_complete(image_model, square_data):
    """Captum's IG: attributions sum to f(input) − f(baseline) for the explained class."""
    row = explain(image_model, square_data, rows=[0]).rows[0]
    features = image_model.encode(square_data)
    baseline = {k: v[:1].clone() for k, v in features["picture"].items()}
    baseline["values"] = torch.zeros_like(baseline["values"])
    runner = Runner(image_model, {"picture": baseline})
    task = image_model.task("label")
    at_baseline = task.decode(runner.outputs()["label"])["probabilities"][0]
    label = list(task.state.classes).index(row.prediction)
    gap = row.value - float(at_baseline[label])
    assert row.attributions[0].attributions.sum() == pytest.approx(gap, abs=0.03)


def test_every_kind_is_attributed(full_model, shapes):
    model, _ = full_model
    explanation = explain(model, shapes, rows=[4])
    items = {item.input: item for item in explanation.rows[0].attributions}
    assert {name: item.kind for name, item in items.items()} == {
        "picture": "image", "sound": "audio", "comment": "text", "size": "number",
        "colour": "category",
    }  # fmt: skip
    features = model.encode(shapes)
    assert items["picture"].attributions.shape == tuple(features["picture"]["values"].shape[1:])
    assert items["sound"].attributions.shape == tuple(features["sound"]["values"].shape[1:])
    assert sum(items["sound"].summary["frame_share"]) == pytest.approx(1.0, abs=1e-3)
    state = model.schema_.input("comment")
    text = read_table(shapes).frame["comment"][4]
    expected = Tokenizer.from_str(state.tokenizer).encode(text).tokens[: state.max_tokens]
    assert items["comment"].summary["tokens"] == expected
    assert len(items["comment"].summary["scores"]) == len(expected)
    assert np.any(np.abs(items["comment"].summary["scores"]) > 0)
    assert isinstance(items["colour"].summary["attribution"], float)


def test_explain_command_writes_pictures_json_and_html(full_model, shapes, tmp_path):
    _, folder = full_model
    out = tmp_path / "why"
    runner = CliRunner()
    args = ["explain", str(folder), str(shapes), "--rows", "0,5,9", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for row in (0, 5, 9):
        for stem in ("picture", "sound", "columns"):
            assert (out / f"row{row}_{stem}.png").read_bytes()[:4] == b"\x89PNG"
    document = json.loads((out / "explanations.json").read_text())
    assert [row["row"] for row in document["rows"]] == [0, 5, 9]
    assert document["rows"][0]["attributions"]["comment"]["tokens"]
    assert "row0_picture.png" in document["rows"][0]["pictures"]
    page = (out / "explain.html").read_text()
    assert page.count("<img") == 9 and "background:rgba(" in page and "Row 9" in page
    assert runner.invoke(app, args).exit_code == 2, "earlier results are not overwritten"
    bad = runner.invoke(app, [*args[:3], "--rows", "0,400", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "out of range" in bad.output


def test_video_frames_get_importances(tmp_path, cache):
    from polymodal import Model
    from tests.media import tiny_config

    rows = []
    for index in range(12):
        bright = index % 2 == 0
        write_mp4(tmp_path / f"v{index}.mp4", brightness=220 if bright else 30, frames=4, size=16)
        rows.append(
            {
                "clip": f"v{index}.mp4",
                "level": float(index % 3),
                "label": ["dark", "bright"][bright],
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "videos.csv", index=False)
    config = tiny_config(max_epochs=2)
    config.preprocess.video.frames, config.preprocess.video.size = 4, 16
    model = Model(target="label", config=config, cache=cache).fit(tmp_path / "videos.csv")
    explanation = explain(model, tmp_path / "videos.csv", rows=[0])
    (video,) = [item for item in explanation.rows[0].attributions if item.kind == "video"]
    assert video.attributions.shape == (4, 3, 16, 16)
    assert len(video.summary["frame_share"]) == 4
    assert sum(video.summary["frame_share"]) == pytest.approx(1.0, abs=1e-3)
    from polymodal.explain import robustness, write_explanations

    assert (write_explanations(explanation, model, tmp_path / "out")[0]).name == "row0_clip.png"
    result = robustness(model, tmp_path / "videos.csv")["targets"]["label"]
    perturbations = {(c["input"], c["perturbation"]) for c in result["curves"]}
    assert {("clip", "gaussian noise"), ("clip", "blur"), ("clip", "PGD")} <= perturbations
