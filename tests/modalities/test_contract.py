"""One contract for every registered modality (as timm tests every registered model): fit on
a few generated cells, encode, save the state as JSON and read it back, and keep the
features' shape under noise and augmentation."""

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import TypeAdapter

from polymodal.config import AudioSettings, ColumnConfig, Config, ConfigError, PreprocessSettings
from polymodal.data.cache import FeatureCache
from polymodal.data.features import InputState
from polymodal.data.problems import ProblemLog
from polymodal.data.schema import resolve_inputs
from polymodal.data.table import Table
from polymodal.encoders import DEFAULT_ENCODERS, ENCODERS
from polymodal.modalities import MODALITIES, modality, query_kinds
from polymodal.modalities.base import EncodeContext, FitContext
from tests.media import write_mp4, write_png, write_wav

SETTINGS = PreprocessSettings(audio=AudioSettings(n_mels=16))


def cells_for(kind: str, folder) -> list:
    """Four cells of `kind` and one missing."""
    if kind == "image":
        for i in range(4):
            write_png(folder / f"{i}.png", seed=i)
        return [f"{i}.png" for i in range(4)] + [None]
    if kind == "audio":
        for i in range(4):
            write_wav(folder / f"{i}.wav")
        return [f"{i}.wav" for i in range(4)] + [None]
    if kind == "video":
        for i in range(4):
            write_mp4(folder / f"{i}.mp4", brightness=40 * i)
        return [f"{i}.mp4" for i in range(4)] + [None]
    if kind == "text":
        return ["the cat sat", "a dog ran far away", "the dog sat", "a cat ran", None]
    if kind == "number":
        return [1.0, 2.5, -3.0, 4.0, None]
    return ["red", "blue", "red", "green", None]


def test_every_kind_is_registered_with_a_default_encoder():
    assert MODALITIES.names() == ["audio", "category", "image", "number", "text", "video"]
    assert set(DEFAULT_ENCODERS) == set(MODALITIES.names())
    for kind in MODALITIES.names():
        assert ENCODERS.tags(DEFAULT_ENCODERS[kind])["modality"] == kind


@pytest.mark.parametrize("kind", MODALITIES.names())
def test_a_search_query_fills_a_file_kind_by_file_and_the_others_by_typed_text(kind):
    """A file query carries the bytes its modality decodes, so it is named after that kind
    (the serving page shows a stored file in the modality's preview element); a typed query
    fills only kinds whose cells are themselves typed."""
    found = modality(kind)
    if found.files:
        assert found.query == kind
        assert found.widget.preview is not None
    else:
        assert found.query in ("text", None)
    assert (kind in query_kinds().get(found.query, ())) == (found.query is not None)


def test_typed_text_queries_fill_text_and_category_inputs():
    assert query_kinds()["text"] == ("category", "text")


def test_unknown_kind_names_the_known_ones(tmp_path):
    with pytest.raises(KeyError, match="known: audio, category, image"):
        modality("smell")
    table = Table(pd.DataFrame({"a": [1, 2]}), tmp_path)
    config = Config(columns={"a": ColumnConfig(kind="smell")})
    with pytest.raises(ConfigError, match="unknown kind 'smell'; known: audio, category"):
        resolve_inputs(table, config, [])


@pytest.mark.parametrize("kind", MODALITIES.names())
def test_modality_contract(kind, tmp_path):
    reader = modality(kind)
    cells = cells_for(kind, tmp_path)
    state = reader.fit(cells, "x", "x", FitContext(tmp_path, SETTINGS))
    assert isinstance(state, reader.state) and state.kind == kind
    saved = state.model_dump_json()
    assert TypeAdapter(InputState).validate_json(saved) == state, "config.json round trip"
    log = ProblemLog()
    column = reader.encode(state, cells, EncodeContext(tmp_path, log, FeatureCache(enabled=False)))
    assert len(log) == 0 and len(column) == len(cells)
    assert column.present.tolist() == [True] * 4 + [False]
    item = {"values": torch.from_numpy(column.values)}
    if column.lengths is not None:
        item["lengths"] = torch.from_numpy(column.lengths)
    assert reader.augment(item["values"]).shape == item["values"].shape
    for sweep in reader.sweeps(state, item, cells, tmp_path):
        changed = sweep.apply(sweep.levels[-1], np.random.default_rng(0))
        assert changed["values"].shape == item["values"].shape, sweep.perturbation
    epsilons, unit = reader.epsilons()
    assert epsilons and unit


@pytest.mark.parametrize("kind", MODALITIES.names())
def test_modality_describes_its_form_field(kind):
    reader = modality(kind)
    assert reader.widget.control in {"file", "textarea", "number", "select", "text"}
    assert (reader.widget.control == "file") == reader.files == bool(reader.sniffed)
