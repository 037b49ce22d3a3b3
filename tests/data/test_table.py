"""Reading CSV, Parquet and JSONL, whole or in chunks; the split column; a seeded split."""

import numpy as np
import pandas as pd
import pytest

from polymodal.data.problems import BadInputError
from polymodal.data.table import read_table, read_tables, shared_value_groups, split_rows

FRAME = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": ["a", "b", "a", "b"]})


def write(frame: pd.DataFrame, path):
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_formats(tmp_path, suffix):
    table = read_table(write(FRAME, tmp_path / f"t{suffix}"))
    assert table.frame["label"].tolist() == ["a", "b", "a", "b"]
    assert table.base_dir == tmp_path.resolve()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_chunks_hold_the_same_rows_as_the_whole_table(tmp_path, suffix):
    """`train` reads whole tables and `predict` streams them: one reader, the same rows."""
    frame = pd.DataFrame(
        {
            "x": np.linspace(0, 1, 23),
            "count": np.arange(23),
            "label": [["a", "b", "c"][i % 3] for i in range(23)],
            "note": [None if i % 4 == 0 else f"row {i}, with a comma" for i in range(23)],
        }
    )
    path = write(frame, tmp_path / f"t{suffix}")
    whole = read_table(path)
    chunks = list(read_tables(path, chunk_rows=5))
    assert [len(chunk) for chunk in chunks] == [5, 5, 5, 5, 3]
    assert [chunk.first_row for chunk in chunks] == [0, 5, 10, 15, 20]
    assert {(chunk.name, chunk.base_dir) for chunk in chunks} == {(whole.name, whole.base_dir)}
    joined = pd.concat([chunk.frame for chunk in chunks], ignore_index=True)
    pd.testing.assert_frame_equal(joined, whole.frame)
    assert [table.frame for table in read_tables(path)][0].equals(whole.frame)


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_a_malformed_row_names_the_file_and_line(tmp_path, chunk_rows):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3,4\n5,6,7\n")
    with pytest.raises(BadInputError, match=r"bad\.csv.*line 4"):
        list(read_tables(path, chunk_rows))


def test_empty_and_missing_tables_are_clear_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(BadInputError, match="empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(BadInputError, match="no rows"):
        read_table(tmp_path / "header.csv")
    with pytest.raises(BadInputError, match="does not exist"):
        read_table(tmp_path / "nothing.csv")
    with pytest.raises(BadInputError, match="no rows"):
        list(read_tables(tmp_path / "header.csv", chunk_rows=10))


def test_split_column_is_honoured(tmp_path):
    frame = FRAME.assign(split=["train", "test", "valid", "train"])
    splits = split_rows(read_table(frame, tmp_path), 0.5, 0)
    assert splits["train"].tolist() == [0, 3]
    assert splits["valid"].tolist() == [2] and splits["test"].tolist() == [1]


def test_seeded_split_is_repeatable_and_disjoint(tmp_path):
    table = read_table(pd.DataFrame({"x": range(100)}), tmp_path)
    first, again = split_rows(table, 0.2, 7), split_rows(table, 0.2, 7)
    assert np.array_equal(first["valid"], again["valid"]) and len(first["valid"]) == 20
    assert not set(first["train"]) & set(first["valid"])
    assert not np.array_equal(first["valid"], split_rows(table, 0.2, 8)["valid"])


def test_bad_split_values_are_named(tmp_path):
    table = read_table(FRAME.assign(split=["train", "holdout", "train", "train"]), tmp_path)
    with pytest.raises(BadInputError, match="holdout"):
        split_rows(table, 0.1, 0)


def test_rows_sharing_a_file_stay_on_one_side(tmp_path):
    """Each recording paired with three images, as in AV-MNIST: no recording may be both
    trained on and validated on, or validation flatters the model."""
    rows = 300
    frame = pd.DataFrame(
        {
            "image": [f"img/{i}.png" for i in range(rows)],
            "audio": [f"snd/{i % 100}.wav" for i in range(rows)],
            "split": ["train"] * (rows - 30) + ["test"] * 30,
        }
    )
    table = read_table(frame, tmp_path)
    splits = split_rows(table, 0.2, 0, together=["image", "audio"])
    audio = frame["audio"].to_numpy()
    assert not set(audio[splits["train"]]) & set(audio[splits["valid"]])
    assert 0.15 * 270 <= len(splits["valid"]) <= 0.3 * 270
    assert splits["test"].tolist() == list(range(rows - 30, rows))
    plain = split_rows(table, 0.2, 0)  # without `together`, recordings leak across
    assert set(audio[plain["train"]]) & set(audio[plain["valid"]])


def test_one_group_holding_every_row_falls_back_to_a_row_split(tmp_path):
    table = read_table(pd.DataFrame({"audio": ["same.wav"] * 50}), tmp_path)
    splits = split_rows(table, 0.2, 0, together=["audio"])
    assert len(splits["valid"]) == 10 and len(splits["train"]) == 40


def test_group_ids_do_not_depend_on_the_order_of_columns(tmp_path):
    frame = pd.DataFrame({"a": ["x", "y", "x", "z", "w"], "b": ["p", "q", "q", "r", "r"]})
    first = shared_value_groups(frame, ["a", "b"])
    assert first.tolist() == [0, 0, 0, 3, 3]
    assert np.array_equal(first, shared_value_groups(frame, ["b", "a"]))
