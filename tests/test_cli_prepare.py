"""`polymodal prepare` then `polymodal train FOLDER`, and `polymodal list` over every registry."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from polymodal.cli import app
from tests.media import shapes_and_tones

runner = CliRunner()
TINY = {"model": {"dim": 32, "layers": 1, "heads": 2}, "train": {"batch_size": 16}}


def test_prepare_then_train_from_the_folder(tmp_path):
    data = shapes_and_tones(tmp_path / "data", rows=24)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    prepared = tmp_path / "prep"
    result = runner.invoke(app, ["prepare", str(data), "--target", "label", "--out", str(prepared)])
    assert result.exit_code == 0, result.output
    assert (prepared / "prepared.json").is_file()
    again = runner.invoke(app, ["prepare", str(data), "--target", "label", "--out", str(prepared)])
    assert again.exit_code == 2 and "not empty" in again.output  # never written over
    model = tmp_path / "model"
    args = ["train", str(prepared), "--config", str(config), "--epochs", "1", "--out", str(model)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((model / "metrics.json").read_text())
    assert len(metrics["history"]) == 1  # --epochs reached the run
    saved = json.loads((model / "config.json").read_text())
    assert saved["config"]["model"]["dim"] == 32  # and --config
    assert [t["column"] for t in saved["config"]["targets"]] == ["label"]  # targets: prepared


def test_list_every_registry():
    for kind, expected in [
        ("tasks", {"binary", "multiclass", "multilabel", "regression"}),
        ("modalities", {"image", "audio", "video", "text", "number", "category"}),
        ("fusions", {"attention", "concat", "late"}),
    ]:
        result = runner.invoke(app, ["list", kind])
        assert result.exit_code == 0, result.output
        assert expected <= {line.split()[0] for line in result.output.splitlines() if line}
    result = runner.invoke(app, ["list", "heads"])
    assert result.exit_code == 2 and "tasks" in result.output
