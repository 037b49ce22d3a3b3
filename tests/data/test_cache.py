"""Column blocks and encoded columns of the feature cache: one read for a whole column of
files, never stale."""

import os
import time

import numpy as np
import pandas as pd
import pytest

from polymodal.config import Config, ImageSettings, TargetConfig
from polymodal.data import cache as cache_module
from polymodal.data import features as features_module
from polymodal.data.cache import FeatureCache
from polymodal.data.features import encode_inputs, fit_schema
from polymodal.data.problems import BadInputError, ProblemLog
from polymodal.data.table import Table, read_table
from polymodal.modalities.image.preprocess import encode_images, fit_image
from tests.media import write_png, write_wav

HOUR_AGO = time.time() - 3600


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks for columns of 3 files or more (the real threshold is in the hundreds)."""
    monkeypatch.setattr(cache_module, "MIN_BLOCK_FILES", 3)


def age(*paths, seconds_ago: float = 3600) -> None:
    """Set files' modification times in the past, as for data written long before a run."""
    stamp = time.time() - seconds_ago
    for path in paths:
        os.utime(path, (stamp, stamp))


def images(tmp_path, count=4):
    names = [f"{index}.png" for index in range(count)]
    for index, name in enumerate(names):
        write_png(tmp_path / name, seed=index)
    age(*(tmp_path / name for name in names))
    return names, fit_image(names, "i", tmp_path, ImageSettings(), "i")


def test_a_column_is_read_back_from_one_block(tmp_path, small_blocks):
    names, state = images(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    first = encode_images(state, names, tmp_path, ProblemLog(), cache)
    assert (cache.misses, cache.block_hits) == (4, 0)
    second = encode_images(state, names + names[:1], tmp_path, ProblemLog(), cache)
    assert cache.block_hits == 1 and cache.hits == 0, "no file entry was opened"
    np.testing.assert_array_equal(second.values[:4], first.values)
    np.testing.assert_array_equal(second.values[4], first.values[0])


def test_an_edited_file_never_matches_an_old_block(tmp_path, small_blocks):
    names, state = images(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    before = encode_images(state, names, tmp_path, ProblemLog(), cache)
    write_png(tmp_path / names[1], shape="square", seed=9)
    age(tmp_path / names[1], seconds_ago=1800)  # an old time stamp, but not the same one
    after = encode_images(state, names, tmp_path, ProblemLog(), cache)
    assert cache.block_hits == 0
    assert not np.array_equal(after.values[1], before.values[1])
    np.testing.assert_array_equal(after.values[0], before.values[0])


def test_recently_written_files_get_no_block(tmp_path, small_blocks):
    """A file written within the clock's granularity could change again unseen (git's racy
    files): such a column is read file by file every time."""
    names, state = images(tmp_path)
    write_png(tmp_path / names[0], seed=5)  # just now
    cache = FeatureCache(tmp_path / "cache")
    encode_images(state, names, tmp_path, ProblemLog(), cache)
    encode_images(state, names, tmp_path, ProblemLog(), cache)
    assert (cache.misses, cache.hits, cache.block_hits) == (4, 4, 0)
    assert not list((tmp_path / "cache").glob("*/blocks/*.npz"))


def test_a_bad_file_is_reported_again_from_the_block(tmp_path, small_blocks):
    names, state = images(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    age(tmp_path / "bad.png")
    cache = FeatureCache(tmp_path / "cache")
    for expected_block_hits in (0, 1):
        log = ProblemLog()
        features = encode_images(state, [*names, "bad.png"], tmp_path, log, cache)
        assert cache.block_hits == expected_block_hits
        assert [(p.row, p.column) for p in log.problems] == [(4, "i")]
        assert features.present.tolist() == [True] * 4 + [False]


def test_a_file_that_appears_later_is_read(tmp_path, small_blocks):
    names, state = images(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    log = ProblemLog()
    encode_images(state, [*names, "late.png"], tmp_path, log, cache)
    assert len(log.problems) == 1
    write_png(tmp_path / "late.png", seed=7)
    age(tmp_path / "late.png")
    log = ProblemLog()
    features = encode_images(state, [*names, "late.png"], tmp_path, log, cache)
    assert not log.problems and features.present.all()


def test_only_the_newest_blocks_are_kept(tmp_path, small_blocks, monkeypatch):
    monkeypatch.setattr(cache_module, "BLOCKS_KEPT", 2)
    names, state = images(tmp_path, count=6)
    cache = FeatureCache(tmp_path / "cache")
    for start in range(3):  # three different subsets of rows: three blocks written
        encode_images(state, names[start : start + 3], tmp_path, ProblemLog(), cache)
    assert len(list((tmp_path / "cache").glob("*/blocks/*.npz"))) == 2


def test_a_disabled_cache_writes_no_block(tmp_path, small_blocks):
    names, state = images(tmp_path)
    encode_images(state, names, tmp_path, ProblemLog(), FeatureCache(tmp_path / "c", False))
    assert not (tmp_path / "c").exists()


def test_a_block_whose_data_does_not_match_its_index_is_not_used(tmp_path, small_blocks):
    names, state = images(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    first = encode_images(state, names, tmp_path, ProblemLog(), cache)
    (data_file,) = (tmp_path / "cache").glob("*/blocks/*.data.npy")
    np.save(data_file, np.zeros(5, np.float16))  # another length than the index says
    again = encode_images(state, names, tmp_path, ProblemLog(), cache)
    assert cache.block_hits == 0 and cache.hits == 4, "read back file by file"
    np.testing.assert_array_equal(again.values, first.values)


def test_blocks_of_the_older_one_file_format_are_removed(tmp_path, small_blocks):
    names, state = images(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    encode_images(state, names, tmp_path, ProblemLog(), cache)
    folder = next((tmp_path / "cache").glob("*/blocks"))
    old = folder / "0123abcd.npz"
    old.write_bytes(b"a block of an older version")
    encode_images(state, names[:3], tmp_path, ProblemLog(), cache)  # writes a second block
    assert not old.exists()
    assert len(list(folder.glob("*.index.npz"))) == len(list(folder.glob("*.data.npy"))) == 2


def test_file_stamps_are_each_files_size_times_and_inode_in_order(tmp_path):
    paths = [str(write_png(tmp_path / f"{i}.png", seed=i)) for i in range(3)]
    paths.insert(1, str(tmp_path / "gone.png"))
    stamps = cache_module.file_stamps(paths)
    assert stamps.shape == (4, 4) and stamps[1].tolist() == [-1] * 4
    for row, path in zip(stamps[[0, 2, 3]], paths[:1] + paths[2:], strict=True):
        found = os.stat(path)
        assert row.tolist() == [found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino]


def test_a_block_of_one_shape_splits_as_a_block_of_many():
    arrays = [np.full((2, 3), index, np.float16) for index in range(4)]
    data = np.concatenate([a.reshape(-1) for a in arrays])
    offsets = np.arange(5) * 6
    shapes = np.tile([2, 3], (4, 1))
    one_shape = cache_module.split_block(data, offsets, shapes, np.full(4, 2), np.full(4, ""))
    errors = np.array(["", "", "bad file", ""])
    mixed = cache_module.split_block(
        data[:18], np.array([0, 6, 12, 12, 18]), shapes, np.array([2, 2, -1, 2]), errors
    )
    for index in range(4):
        np.testing.assert_array_equal(one_shape[index], arrays[index])
    assert mixed[2] == "bad file"
    np.testing.assert_array_equal(mixed[3], arrays[2])


# ---------------------------------------------------------------- encoded columns


def audio_table(tmp_path, count=5):
    """A table of recordings (variable length: values, present and lengths) and a bad file."""
    names = []
    for index in range(count):
        names.append(f"{index}.wav")
        write_wav(tmp_path / names[-1], pitch=300 + 50 * index, seed=index)
    (tmp_path / "bad.wav").write_bytes(b"not a recording")
    names.insert(2, "bad.wav")
    age(*(tmp_path / name for name in names))
    frame = pd.DataFrame(
        {"a": names, "y": ["x", "z"] * (len(names) // 2) + ["x"] * (len(names) % 2)}
    )
    table = read_table(frame, tmp_path)
    config = Config(inputs=["a"], targets=[TargetConfig(column="y")])
    return table, fit_schema(table, np.arange(len(table)), config)


def encoded(schema, table, cache):
    log = ProblemLog()
    return encode_inputs(schema, table, log, cache)["a"], [(p.row, p.path) for p in log.problems]


def test_an_encoded_column_is_read_back_whole_with_its_problems(tmp_path, small_blocks):
    table, schema = audio_table(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    first, problems = encoded(schema, table, cache)
    assert cache.column_hits == 0 and problems == [(2, "bad.wav")]
    chunk = Table(table.frame, table.base_dir, table.name, first_row=100)  # rows 100 on
    again, problems_again = encoded(schema, chunk, cache)
    assert cache.column_hits == 1 and cache.block_hits == 0, "no file's features were read"
    assert problems_again == [(102, "bad.wav")], "reported again, numbered as this table is"
    for name in ("values", "present", "lengths"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    strict = ProblemLog(strict=True)
    with pytest.raises(BadInputError, match="row 2, column 'a'"):
        encode_inputs(schema, table, strict, cache)


def test_an_edited_file_or_other_rows_never_read_an_old_encoded_column(tmp_path, small_blocks):
    table, schema = audio_table(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    before, _ = encoded(schema, table, cache)
    write_wav(tmp_path / "4.wav", pitch=900, seed=9)
    age(tmp_path / "4.wav", seconds_ago=1800)
    edited, _ = encoded(schema, table, cache)
    assert cache.column_hits == 0
    assert not np.array_equal(edited.values[5], before.values[5])
    swapped = read_table(table.frame.iloc[[1, 0, 2, 3, 4, 5]], tmp_path)  # same files
    reordered, _ = encoded(schema, swapped, cache)
    assert cache.column_hits == 0
    np.testing.assert_array_equal(reordered.values[0], edited.values[1])


def test_another_fitted_state_or_code_never_reads_an_old_encoded_column(
    tmp_path, small_blocks, monkeypatch
):
    table, schema = audio_table(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    first, _ = encoded(schema, table, cache)
    state = schema.inputs[0]
    shifted = schema.model_copy(
        update={"inputs": [state.model_copy(update={"mean": state.mean + 1})]}
    )
    other, _ = encoded(shifted, table, cache)
    assert cache.column_hits == 0 and not np.array_equal(other.values, first.values)
    with monkeypatch.context() as edited:
        edited.setattr(features_module, "encoding_code", lambda kind: "edited")
        encoded(schema, table, cache)
    assert cache.column_hits == 0, "stored by other encoding code"
    encoded(schema, table, cache)
    assert cache.column_hits == 1


def test_a_modality_without_readable_source_gets_no_encoded_column(tmp_path, small_blocks):
    table, schema = audio_table(tmp_path)
    audio = type(features_module.modality("audio"))
    features_module.encoding_code.cache_clear()
    saved = audio.__module__
    try:
        audio.__module__ = "a_notebook_cell"  # no module of that name, so no source to read
        encoded(schema, table, FeatureCache(tmp_path / "cache"))
    finally:
        audio.__module__ = saved
        features_module.encoding_code.cache_clear()
    assert not (tmp_path / "cache" / "columns").exists()


def test_small_columns_and_a_disabled_cache_store_no_encoded_column(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "MIN_BLOCK_FILES", 100)
    table, schema = audio_table(tmp_path)
    encoded(schema, table, FeatureCache(tmp_path / "cache"))
    assert not (tmp_path / "cache" / "columns").exists()
    monkeypatch.setattr(cache_module, "MIN_BLOCK_FILES", 3)
    encoded(schema, table, FeatureCache(tmp_path / "off", enabled=False))
    assert not (tmp_path / "off").exists()


def test_only_the_newest_encoded_columns_that_fit_are_kept(tmp_path, small_blocks, monkeypatch):
    table, schema = audio_table(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    folder = tmp_path / "cache" / "columns"
    encoded(schema, table.subset(np.arange(0, 4)), cache)
    one = sum(path.stat().st_size for path in folder.glob("*.npy"))
    monkeypatch.setattr(cache_module, "COLUMN_BYTES_KEPT", int(2.5 * one))  # room for two
    for start in (1, 2):  # two more sets of rows, each column as large as the first
        encoded(schema, table.subset(np.arange(start, start + 4)), cache)
    assert len(list(folder.glob("*.json"))) == 2
    assert len(list(folder.glob("*.npy"))) == 2 * 3, "values, present and lengths of each"
    encoded(schema, table.subset(np.arange(2, 6)), cache)  # the newest: still stored
    assert cache.column_hits == 1
