"""Model.embed: the fused vector per row, and one column alone with every other input masked."""

import numpy as np
import pandas as pd
import pytest

from polymodal import Model
from polymodal.data.cache import FeatureCache
from polymodal.data.problems import BadInputError, ProblemLog
from polymodal.data.table import read_table
from polymodal.demo import make_demo_data
from polymodal.network import MultimodalNet
from tests.media import tiny_config

ROWS, DIM = 32, 32  # tiny_config: model.dim 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("demo"), rows=ROWS)


@pytest.fixture(scope="module")
def model(data, tmp_path_factory):
    """Module fixtures outlive each test's own cache (tests/conftest.py): pass one explicitly."""
    cache = FeatureCache(tmp_path_factory.mktemp("cache"))
    return Model(target="label", config=tiny_config(), cache=cache).fit(data)


def swapped_sound(data, row: int = 0, other: int = 1):
    """The demo table, and the same table with one row's sound file swapped for another's."""
    frame = pd.read_csv(data)
    changed = frame.copy()
    changed.loc[row, "sound"] = frame.loc[other, "sound"]
    return read_table(frame, base_dir=data.parent), read_table(changed, base_dir=data.parent)


def test_embed_is_float32_rows_by_dim_and_deterministic(model, data):
    vectors = model.embed(data)
    assert vectors.shape == (ROWS, DIM) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    np.testing.assert_array_equal(model.embed(data), vectors)
    alone = model.embed(data, column="image")
    assert alone.shape == (ROWS, DIM) and alone.dtype == np.float32
    assert not np.allclose(alone, vectors, atol=1e-4)  # the other inputs are gone
    assert len(np.unique(alone.round(5), axis=0)) == ROWS  # every picture its own vector


def test_one_column_masks_every_other_input(model, data):
    original, changed = swapped_sound(data)
    image_before = model.embed(original, column="image")
    image_after = model.embed(changed, column="image")
    np.testing.assert_allclose(image_after, image_before, atol=1e-6)  # the sound is not read
    both_before, both_after = model.embed(original), model.embed(changed)
    assert not np.allclose(both_after[0], both_before[0], atol=1e-4)  # without column it is
    np.testing.assert_allclose(both_after[1:], both_before[1:], atol=1e-6)
    sound_before = model.embed(original, column="sound")
    assert not np.allclose(model.embed(changed, column="sound")[0], sound_before[0], atol=1e-4)


def test_one_column_needs_no_other_column_in_the_table(model, data):
    only_images = read_table(pd.read_csv(data)[["image"]], base_dir=data.parent)
    np.testing.assert_allclose(
        model.embed(only_images, column="image"), model.embed(data, column="image"), atol=1e-6
    )


def test_unknown_column_names_it_and_lists_the_inputs(model, data):
    with pytest.raises(BadInputError) as error:
        model.embed(data, column="colour")
    message = str(error.value)
    assert "'colour'" in message
    for name in ("image", "sound", "note", "brightness"):
        assert name in message


def test_rows_without_the_column_are_nan_and_bad_files_logged(model, data):
    frame = pd.read_csv(data)
    frame.loc[2, "image"] = None  # an empty cell: masked, nothing to report
    frame.loc[5, "image"] = "images/does_not_exist.png"
    table = read_table(frame, base_dir=data.parent)
    log = ProblemLog()
    vectors = model.embed(table, column="image", log=log)
    missing = ~np.isfinite(vectors).all(axis=1)
    assert np.flatnonzero(missing).tolist() == [2, 5]
    assert np.isnan(vectors[[2, 5]]).all()
    assert [(p.row, p.column) for p in log.problems] == [(5, "image")]
    assert "not found" in log.problems[0].reason
    assert np.isfinite(model.embed(table)).all()  # every row has some input: no NaN


@pytest.mark.parametrize("fusion", ["late", "attention"])
def test_every_fusion_embeds_one_column_alone(model, data, fusion):
    """Untrained weights suffice for shapes and masking; the schema is the fitted one."""
    config = tiny_config()
    config.model.fusion = fusion
    other = Model(config=config, cache=model.cache)
    other.schema_ = model.schema_
    other.net_ = MultimodalNet(model.schema_, config.model)
    original, changed = swapped_sound(data)
    before = other.embed(original, column="image")
    assert before.shape == (ROWS, DIM) and np.isfinite(before).all()
    np.testing.assert_allclose(other.embed(changed, column="image"), before, atol=1e-6)
    assert not np.allclose(other.embed(changed)[0], other.embed(original)[0], atol=1e-5)
