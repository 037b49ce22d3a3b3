"""Decoding's shared machinery: strict mode stops at the first problem, and the feature cache
is keyed by content and settings. Each modality's decoders are tested in tests/modalities."""

import pytest

from polymodal.config import ImageSettings
from polymodal.data.cache import FeatureCache
from polymodal.data.problems import BadInputError, ProblemLog
from polymodal.modalities.image.preprocess import encode_images, fit_image
from polymodal.modalities.number.preprocess import encode_numbers, fit_number
from tests.media import write_png


def test_strict_stops_at_the_first_problem(tmp_path):
    with pytest.raises(BadInputError, match="row 1, column 'n'.*not a number"):
        encode_numbers(fit_number([1.0], "n", "n"), [1.0, "x", "y"], ProblemLog(strict=True))


def test_feature_cache_is_keyed_by_content_and_settings(tmp_path):
    write_png(tmp_path / "a.png", seed=1)
    state = fit_image(["a.png"], "i", tmp_path, ImageSettings(), "i")
    cache = FeatureCache(tmp_path / "cache")
    encode_images(state, ["a.png"], tmp_path, ProblemLog(), cache)
    assert (cache.hits, cache.misses) == (0, 1)
    (tmp_path / "copy.png").write_bytes((tmp_path / "a.png").read_bytes())
    encode_images(state, ["copy.png"], tmp_path, ProblemLog(), cache)
    assert cache.hits == 1, "same bytes under another name is a hit"
    bigger = state.model_copy(update={"size": 48})
    encode_images(bigger, ["a.png"], tmp_path, ProblemLog(), cache)
    assert cache.misses == 2, "other settings never reuse old features"
    write_png(tmp_path / "a.png", seed=2)
    encode_images(state, ["a.png"], tmp_path, ProblemLog(), cache)
    assert cache.misses == 3, "an edited file is never a stale hit"
