"""Schema inference: by content, not only by extension; config overrides; clear errors."""

import shutil

import pandas as pd
import pytest

from polymodal.config import ColumnConfig, Config
from polymodal.data.problems import BadInputError
from polymodal.data.schema import infer_kind, resolve_inputs
from polymodal.data.table import read_table
from tests.media import write_mp4, write_png, write_wav


def test_media_kinds_come_from_file_bytes(tmp_path):
    png = write_png(tmp_path / "a.png")
    wav = write_wav(tmp_path / "b.wav")
    mp4 = write_mp4(tmp_path / "c.mp4")
    # Misleading names: the content decides.
    shutil.copy(png, tmp_path / "picture.dat")
    shutil.copy(wav, tmp_path / "sound.bin")
    shutil.copy(mp4, tmp_path / "clip.data")
    assert infer_kind(pd.Series(["a.png"]), tmp_path)[0] == "image"
    assert infer_kind(pd.Series(["picture.dat"]), tmp_path)[0] == "image"
    assert infer_kind(pd.Series(["sound.bin"]), tmp_path)[0] == "audio"
    assert infer_kind(pd.Series(["clip.data"]), tmp_path)[0] == "video"


def test_missing_files_fall_back_to_extension(tmp_path):
    kind, reason = infer_kind(pd.Series(["gone/x.wav", "gone/y.wav"]), tmp_path)
    assert kind == "audio" and "extension" in reason


def test_numbers_categories_text_and_identifiers(tmp_path):
    rows = 60
    assert infer_kind(pd.Series([0.5 * i for i in range(rows)][::-1]), tmp_path)[0] == "number"
    assert infer_kind(pd.Series(["red", "blue", "green"] * 20), tmp_path)[0] == "category"
    sentences = [f"this is sentence number {i} about things" for i in range(rows)]
    assert infer_kind(pd.Series(sentences), tmp_path)[0] == "text"
    assert infer_kind(pd.Series(range(rows)), tmp_path)[0] == "ignored"
    assert infer_kind(pd.Series([None] * 5), tmp_path)[0] == "ignored"


def test_config_overrides_and_input_selection(tmp_path):
    frame = pd.DataFrame({"a": [1, 2, 3, 4] * 5, "b": ["x", "y"] * 10, "y": [0, 1] * 10})
    table = read_table(frame, tmp_path)
    config = Config(columns={"a": ColumnConfig(kind="category")})
    assert resolve_inputs(table, config, ["y"]) == {"a": "category", "b": "category"}
    config.inputs = ["b"]
    assert resolve_inputs(table, config, ["y"]) == {"b": "category"}


def test_unknown_input_column_is_one_clear_error(tmp_path):
    table = read_table(pd.DataFrame({"a": [1.0, 2.5], "y": [0, 1]}), tmp_path)
    with pytest.raises(BadInputError, match="no column 'nope'"):
        resolve_inputs(table, Config(inputs=["nope"]), ["y"])
