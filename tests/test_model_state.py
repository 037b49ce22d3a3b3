"""What a Model keeps and what it leaves alone: the caller's Config is never changed, encoding
returns its problems, a second fit starts its bookkeeping afresh."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from polymodal.data.cache import FeatureCache
from polymodal.model import Model
from polymodal.training import embeddings
from tests import pretrained_models
from tests.media import shapes_and_tones, tiny_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes_and_tones(tmp_path_factory.mktemp("state") / "data", rows=24)


def test_the_config_given_is_never_changed(data, tmp_path):
    config = tiny_config(max_epochs=1)
    before = config.model_dump()
    model = Model(target="label", inputs=["picture"], fusion="late", config=config)
    model.fit(data, out=tmp_path / "model")
    assert config.model_dump() == before
    assert model.config.model.fusion == "late" and model.config.inputs == ["picture"]
    assert model.config is not config


def test_encode_returns_its_problems(data, tmp_path):
    model = Model(target="label", inputs=["picture"], config=tiny_config(max_epochs=1))
    model.fit(data)
    frame = pd.read_csv(data)
    frame.loc[3, "picture"] = "img/missing.png"
    frame.to_csv(tmp_path / "broken.csv", index=False)
    (tmp_path / "img").symlink_to(data.parent / "img")
    features = model.encode(tmp_path / "broken.csv")
    problems = features.problems.problems
    assert [(p.row, p.column) for p in problems] == [(3, "picture")]
    assert not bool(features["picture"]["present"][3]) and bool(features["picture"]["present"][2])
    assert model.encode(data).problems.problems == []  # each call has its own
    assert not hasattr(model, "last_problems_")


PASS_SECONDS = 1.0  # a slowed embedding pass, long against the noise of the rest


def test_a_second_fit_does_not_add_to_the_first_fits_embedding_time(data, tmp_path, monkeypatch):
    original = embeddings.compute

    def slow(encoder, name, item, rows, batch_size):
        time.sleep(PASS_SECONDS)
        return original(encoder, name, item, rows, batch_size)

    monkeypatch.setattr(embeddings, "compute", slow)
    config = tiny_config(max_epochs=1)
    config.model.encoders = {"image": str(pretrained_models.vit_folder(tmp_path / "vit"))}
    model = Model(
        target="label", inputs=["picture"], config=config, cache=FeatureCache(enabled=False)
    )
    first = model.fit(data).metrics_["embedding_seconds"]
    second = model.fit(data).metrics_["embedding_seconds"]
    assert first >= PASS_SECONDS and second >= PASS_SECONDS
    # The second fit's own time: a sum of both would be at least first + PASS_SECONDS. (A ratio
    # to `first` failed on a loaded machine, where the rest of a pass varies by tenths.)
    assert second < first + 0.8 * PASS_SECONDS
    assert model.embedding_seconds_ == second
