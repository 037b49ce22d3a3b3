"""Preparation apart from training: prepare once, train from the prepared folder in another
process without decoding a file again, with the same result as training from the table."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

import polymodal.training.datamodule as datamodule
from polymodal.data.cache import FeatureCache
from polymodal.data.store import DiskArray
from polymodal.model import Model
from polymodal.training.datamodule import PolymodalDataModule, is_prepared
from tests.media import shapes_and_tones, tiny_config

TRAIN_FROM_FOLDER = textwrap.dedent(
    """
    import sys
    import polymodal.data.features as features
    import polymodal.training.datamodule as datamodule

    def refuse(*args, **kwargs):
        raise AssertionError("decoded or fitted again")

    # Every way into decoding or schema fitting is closed: training must not need them.
    features.encode_inputs = features.fit_schema = refuse
    datamodule.encode_inputs = datamodule.fit_schema = refuse
    from polymodal.model import Model

    Model().fit(sys.argv[1], out=sys.argv[2])
    """
)


def test_prepared_folder_trains_in_a_new_process_without_decoding(tmp_path, monkeypatch):
    data = shapes_and_tones(tmp_path / "data", rows=32)
    copy = shutil.copytree(tmp_path / "data", tmp_path / "copy")
    config = tiny_config()
    prepared = Model(target="label", config=config, cache=FeatureCache(tmp_path / "c1")).prepare(
        copy / data.name, tmp_path / "prepared"
    )
    assert is_prepared(prepared)
    shutil.rmtree(copy)  # the media files are gone; only the prepared folder remains
    monkeypatch.setenv("POLYMODAL_CACHE", str(tmp_path / "empty-cache"))
    subprocess.run(
        [sys.executable, "-c", TRAIN_FROM_FOLDER, str(prepared), str(tmp_path / "model")],
        check=True,
        timeout=300,
    )
    assert not (tmp_path / "empty-cache").exists()  # nothing was decoded into a cache
    from_folder = Model.load(tmp_path / "model", cache=FeatureCache(tmp_path / "c2"))
    direct = Model(target="label", config=config, cache=FeatureCache(tmp_path / "c3"))
    direct.fit(data, out=tmp_path / "direct")
    pd.testing.assert_frame_equal(from_folder.predict(data), direct.predict(data), atol=1e-5)
    saved = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert saved["valid"]["label"]["accuracy"] == pytest.approx(
        direct.metrics_["valid"]["label"]["accuracy"]
    )
    assert (
        saved["valid"]["label"]["confusion_matrix"]
        == direct.metrics_["valid"]["label"]["confusion_matrix"]
    )
    assert saved["rows"] == direct.metrics_["rows"]


def test_data_module_prepares_once_and_batches_with_a_standard_loader(tmp_path):
    data = shapes_and_tones(tmp_path / "data", rows=24)
    config = tiny_config()
    config.targets = Model(target="label").config.targets
    module = PolymodalDataModule(
        tmp_path / "prepared", data, config=config, cache=FeatureCache(tmp_path / "cache")
    )
    module.prepare_data()
    written = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "prepared").iterdir()}
    module.prepare_data()  # a prepared folder is not prepared again
    assert written == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "prepared").iterdir()}
    module.setup("fit")
    loader = module.train_dataloader()
    assert type(loader).__name__ == "DataLoader"
    sizes = [len(batch["targets"]["label"][0]) for batch in loader]
    assert sum(sizes) == len(module.prepared.rows["train"])
    assert sizes[0] == config.train.batch_size
    # a prepared folder trained with other settings (Model.fit's): their batch size, not its own
    other = config.train.model_copy(update={"batch_size": 5})
    assert len(next(iter(module.train_dataloader(other)))["targets"]["label"][0]) == 5
    first = next(iter(loader))
    assert set(first["inputs"]) == {state.column for state in module.prepared.schema.inputs}
    assert {"values", "present"} <= set(first["inputs"]["picture"])


def test_a_missing_prepared_folder_is_a_clear_error(tmp_path):
    from polymodal.data.problems import BadInputError

    with pytest.raises(BadInputError, match="no prepared data"):
        PolymodalDataModule(tmp_path / "nothing").prepare_data()


def prepared_arrays(folder) -> dict:
    return {path.name: np.load(path) for path in sorted(folder.glob("*.npy"))}


def test_preparing_in_chunks_writes_what_one_chunk_would_and_logs_file_rows(tmp_path, monkeypatch):
    data = shapes_and_tones(tmp_path / "data", rows=24)
    (data.parent / "img" / "17.png").write_bytes(b"not a picture")
    config = tiny_config()
    whole = Model(target="label", config=config, cache=FeatureCache(tmp_path / "c1")).prepare(
        data, tmp_path / "whole"
    )
    monkeypatch.setattr(datamodule, "CHUNK_ROWS", 5)
    chunked = Model(target="label", config=config, cache=FeatureCache(tmp_path / "c2")).prepare(
        data, tmp_path / "chunked"
    )
    expected, got = prepared_arrays(whole), prepared_arrays(chunked)
    assert got.keys() == expected.keys()
    for name, array in expected.items():
        np.testing.assert_array_equal(got[name], array, err_msg=name)
    problems = json.loads((chunked / "prepared.json").read_text())["problems"]
    assert [(p["row"], p["column"]) for p in problems] == [(17, "picture")]


def test_training_from_arrays_on_disk_matches_training_from_memory(tmp_path, monkeypatch):
    data = shapes_and_tones(tmp_path / "data", rows=32)
    config = tiny_config()
    in_memory = Model(target="label", config=config, cache=FeatureCache(tmp_path / "c1"))
    in_memory.fit(data)
    monkeypatch.setattr(datamodule, "IN_MEMORY_BYTES", 0)  # every input array stays on disk
    monkeypatch.setattr(datamodule, "PART_IN_MEMORY_BYTES", 0)
    loaded = datamodule.load(
        Model(target="label", config=config, cache=FeatureCache(tmp_path / "c2")).prepare(
            data, tmp_path / "prepared"
        )
    )
    assert all(
        isinstance(item["values"], DiskArray) for item in loaded.parts["table"].inputs.values()
    )
    on_disk = Model(target="label", config=config, cache=FeatureCache(tmp_path / "c3"))
    on_disk.fit(data)

    def without_times(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in history]

    assert without_times(on_disk.metrics_["history"]) == without_times(
        in_memory.metrics_["history"]
    )
    pd.testing.assert_frame_equal(on_disk.predict(data), in_memory.predict(data))


def test_a_part_that_fits_the_memory_budget_is_read_whole(tmp_path, monkeypatch):
    """Arrays above IN_MEMORY_BYTES stay on disk only when their part does not fit the
    budget; the budget is an eighth of the memory still available when that is less."""
    folder = Model(target="label", config=tiny_config()).prepare(
        shapes_and_tones(tmp_path / "data", rows=32), tmp_path / "prepared"
    )
    monkeypatch.setattr(datamodule, "IN_MEMORY_BYTES", 0)
    whole = datamodule.load(folder).parts["table"].inputs
    assert all(isinstance(t, torch.Tensor) for item in whole.values() for t in item.values())
    monkeypatch.setattr(datamodule, "available_memory", lambda: 8 * 1000)  # a budget of 1 kB
    assert datamodule.part_in_memory_bytes() == 1000
    split = datamodule.load(folder).parts["table"].inputs
    assert all(isinstance(item["values"], DiskArray) for item in split.values())
    for name, item in whole.items():
        rows = torch.tensor([3, 0, 31])
        assert torch.equal(split[name]["values"][rows], item["values"][rows])
    monkeypatch.setattr(datamodule, "available_memory", lambda: None)
    assert datamodule.part_in_memory_bytes() == datamodule.PART_IN_MEMORY_BYTES
