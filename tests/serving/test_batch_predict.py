"""`polymodal predict` in chunks: streamed output, and --resume after a kill."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from polymodal.cli import app
from polymodal.model import Model
from polymodal.serving.batch import complete_records_end, read_chunks
from tests.serving.conftest import data_lines

runner = CliRunner()
SLOW_DRIVER = """
import sys, time
from polymodal.model import Model
real = Model.predict
def slow(self, data):
    time.sleep(0.4)  # slow enough to be killed halfway
    return real(self, data)
Model.predict = slow
from polymodal.cli import app
app(sys.argv[1:], prog_name="polymodal")
"""


def predict(*args: str):
    return runner.invoke(app, ["predict", *map(str, args)])


def test_chunked_output_equals_model_predict(trained, tmp_path):
    output = tmp_path / "preds.csv"
    result = predict(trained.model_dir, trained.data, "-o", output, "--chunk-size", "5")
    assert result.exit_code == 0, result.output
    assert "32 predictions written" in result.output
    written = pd.read_csv(output)
    assert written.columns[0] == "row" and written["row"].tolist() == list(range(32))
    whole = Model.load(trained.model_dir).predict(trained.data)
    assert (written["label_predicted"] == whole["label_predicted"]).all()
    probabilities = [c for c in whole.columns if "_prob_" in c]
    assert np.allclose(written[probabilities], whole[probabilities], atol=1e-6)


def test_parquet_and_jsonl_are_read_in_chunks(trained, tmp_path):
    frame = pd.read_csv(trained.data)
    for suffix in ("parquet", "jsonl"):
        path = trained.folder / f"copy.{suffix}"
        frame.to_parquet(path) if suffix == "parquet" else frame.to_json(
            path, orient="records", lines=True
        )
        chunks = list(read_chunks(path, 7, skip=10))
        assert [offset for offset, _ in chunks] == [10, 14, 21, 28]
        assert sum(len(part) for _, part in chunks) == 22
        output = tmp_path / f"{suffix}.csv"
        result = predict(trained.model_dir, path, "-o", output, "--chunk-size", "7")
        assert result.exit_code == 0, result.output
        assert pd.read_csv(output)["row"].tolist() == list(range(32))


def test_existing_output_needs_resume_or_overwrite(trained, tmp_path):
    output = tmp_path / "preds.csv"
    output.write_text("something\n")
    result = predict(trained.model_dir, trained.data, "-o", output)
    assert result.exit_code == 2 and "--overwrite" in result.output
    result = predict(trained.model_dir, trained.data, "-o", output, "--resume", "--overwrite")
    assert result.exit_code == 2 and "not both" in result.output
    result = predict(trained.model_dir, trained.data, "-o", output, "--resume")
    assert result.exit_code == 2 and "other columns" in result.output
    result = predict(trained.model_dir, trained.data, "-o", output, "--overwrite")
    assert result.exit_code == 0 and len(pd.read_csv(output)) == 32


def test_killed_run_resumed_gives_each_row_exactly_once(trained, tmp_path):
    reference = tmp_path / "reference.csv"
    assert (
        predict(trained.model_dir, trained.data, "-o", reference, "--chunk-size", "4").exit_code
        == 0
    )

    output = tmp_path / "preds.csv"
    command = [sys.executable, "-c", SLOW_DRIVER, "predict", str(trained.model_dir)]
    command += [str(trained.data), "-o", str(output), "--chunk-size", "4"]
    process = subprocess.Popen(command, env={**os.environ, "POLYMODAL_PROGRESS": "0"})
    deadline = time.monotonic() + 120
    while data_lines(output) < 8 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.kill()  # SIGKILL: no clean-up, as after a crash or power cut
    process.wait()
    assert process.returncode != 0, "the run finished before it could be killed"
    written = data_lines(output)
    assert 8 <= written < 32
    with open(output, "a") as handle:
        handle.write(f"{written},circle-lo")  # as if killed in the middle of a line

    result = predict(trained.model_dir, trained.data, "-o", output, "--chunk-size", "4", "--resume")
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"{32 - written} predictions written" in said and f"({written} already there)" in said
    assert output.read_text() == reference.read_text()  # every row once, identical values

    again = predict(trained.model_dir, trained.data, "-o", output, "--resume")
    assert again.exit_code == 0 and "0 predictions written" in " ".join(again.output.split())
    assert output.read_text() == reference.read_text()


def test_record_end_respects_quoted_newlines(tmp_path):
    path = tmp_path / "out.csv"
    path.write_bytes(b'row,label\n0,"two\nlines"\n1,"cut\nhere')
    end, last_start = complete_records_end(path)
    assert path.read_bytes()[:end] == b'row,label\n0,"two\nlines"\n'
    assert path.read_bytes()[last_start:end] == b'0,"two\nlines"\n'


@pytest.mark.parametrize("resume", [False, True])
def test_bad_rows_are_reported_with_their_table_row(trained, tmp_path, resume):
    frame = pd.read_csv(trained.data)
    frame.loc[9, "picture"] = "img/missing.png"
    data = trained.folder / f"with-problem-{resume}.csv"
    frame.to_csv(data, index=False)
    output = tmp_path / "preds.csv"
    args = ["--chunk-size", "4"] + (["--resume"] if resume else [])
    result = predict(trained.model_dir, data, "-o", output, *args)
    assert result.exit_code == 0, result.output
    assert "1 input problems" in " ".join(result.output.split())
    assert "file not found" in result.output and " 9 " in result.output
