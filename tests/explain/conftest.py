"""Models trained once for the whole explain package: tiny, on generated data."""

import pytest
import torch

from polymodal import Model
from polymodal.data.cache import FeatureCache
from tests.explain.squares import squares
from tests.media import shapes_and_tones, tiny_config


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """On two shared cores, torch's thread pool spin-waits against other work and small
    models run many times slower than on one thread; these tests run hundreds of passes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def seeded_fit(model, data, **kwargs):
    """Fit with the global torch seed set first: `Model.fit` seeds training, but the network
    is built (and initialised) before that, so without this the initial weights would
    depend on which tests ran earlier in the same process."""
    torch.manual_seed(model.config.train.seed)
    return model.fit(data, **kwargs)


@pytest.fixture(scope="package")
def cache(tmp_path_factory):
    return FeatureCache(tmp_path_factory.mktemp("explain-cache"))


@pytest.fixture(scope="package")
def shapes(tmp_path_factory):
    """The label is shape × pitch: it needs the picture and the sound."""
    return shapes_and_tones(tmp_path_factory.mktemp("shapes"), rows=96)


@pytest.fixture(scope="package")
def av_model(shapes, cache):
    config = tiny_config(max_epochs=16, patience=16)
    config.preprocess.image.size = 16
    model = Model(
        target="label", inputs=["picture", "sound"], fusion="concat", config=config, cache=cache
    )
    return seeded_fit(model, shapes)


@pytest.fixture(scope="package")
def full_model(shapes, cache, tmp_path_factory):
    """Every kind but video (image, audio, text, number, category) and two targets, one of
    them a regression; saved, so the CLI and the report can load it."""
    folder = tmp_path_factory.mktemp("full") / "model"
    config = tiny_config(max_epochs=3)
    config.preprocess.image.size = 16
    model = Model(target=["label", "score"], config=config, cache=cache)
    seeded_fit(model, shapes, out=folder)
    return model, folder


@pytest.fixture(scope="package")
def square_data(tmp_path_factory):
    return squares(tmp_path_factory.mktemp("squares"), rows=96)


@pytest.fixture(scope="package")
def image_model(square_data, cache):
    """Image only: a bright square in the top-left quadrant, or none."""
    config = tiny_config(max_epochs=12, patience=12)
    model = Model(target="label", inputs=["picture"], config=config, cache=cache)
    return seeded_fit(model, square_data)
