"""Images: good, corrupt, truncated and missing files; grey stays grey."""

import numpy as np

from polymodal.config import ImageSettings
from polymodal.data.cache import FeatureCache
from polymodal.data.problems import ProblemLog
from polymodal.modalities.image.preprocess import encode_images, fit_image
from tests.media import write_png
from tests.modalities.logs import reasons


def test_images_good_corrupt_truncated_missing(tmp_path):
    write_png(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    cells = ["good.png", "corrupt.png", "truncated.png", "missing.png", None]
    state = fit_image(cells, "img", tmp_path, ImageSettings(), "img")
    assert state.size == 32 and state.channels == 3
    log = ProblemLog()
    column = encode_images(state, cells, tmp_path, log, FeatureCache(enabled=False))
    assert column.values.shape == (5, 3, 32, 32)
    assert column.present.tolist() == [True, False, False, False, False]
    found = reasons(log)
    assert set(found) == {1, 2, 3}, "an empty cell is missing, not a problem"
    assert "not a readable image" in found[1] and found[3] == "file not found"
    assert np.all(column.values[1:] == 0)


def test_grey_images_stay_grey(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "g.png")
    state = fit_image(["g.png"], "g", tmp_path, ImageSettings(), "g")
    assert state.channels == 1 and state.size == 20, "kept at its own side, not rounded up"
