"""Why a search hit is like its query: IG of the similarity score over the stored input's
values (an image's pixels, a recording's spectrogram)."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from polymodal.data.problems import BadInputError
from polymodal.data.table import read_table
from polymodal.explain.similarity import (
    explain_hit,
    similarity_attribution,
    write_similarity_figure,
)
from polymodal.fusion import pooled
from polymodal.search import Index
from polymodal.search.embeddings import IndexSource, write_source
from tests.explain.squares import QUADRANT, SIZE


def cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def score_by_hand(vector, query, metric: str) -> float:
    """The similarity of one vector to the query, as numpy computes it."""
    return {
        "cosine": cosine(vector, query),
        "dot": float(vector @ query),
        "l2": -float(np.linalg.norm(vector - query)),
    }[metric]


@pytest.fixture(scope="module")
def square_query(image_model, tmp_path_factory):
    """The vector of an image whose only content is a bright square in the top-left quadrant
    (the plain background of the generated pictures, without their noise)."""
    pixels = np.full((SIZE, SIZE), 0.25)
    pixels[2:6, 2:6] = 1.0
    path = tmp_path_factory.mktemp("query") / "square.png"
    Image.fromarray((pixels * 255).astype(np.uint8), mode="L").save(path)
    return image_model.embed(pd.DataFrame({"picture": [str(path)]}), column="picture")[0]


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_attributions_add_up_to_the_similarity_gap(image_model, square_data, square_query, metric):
    """IG's completeness: Σ attributions = s(x) − s(baseline), s being the index's score of
    the row's `Model.embed` vector, and the baseline the training-mean (all-zero) image."""
    vectors = image_model.embed(square_data, column="picture")
    features = image_model.encode(square_data)
    zeroed = {k: v[:1].clone() for k, v in features["picture"].items()}
    zeroed["values"] = torch.zeros_like(zeroed["values"], dtype=torch.float32)
    with torch.no_grad():
        at_zero = pooled(image_model.net_.fuse({"picture": zeroed}))[0].numpy()
    baseline = score_by_hand(at_zero, square_query, metric)
    # completeness is checked relative to the gap, so on the rows whose gap is widest (a gap
    # near 0 would make a 5 % tolerance a test of rounding)
    gaps = np.array([score_by_hand(v, square_query, metric) - baseline for v in vectors])
    for row in np.argsort(-np.abs(gaps))[:3].tolist():
        result = similarity_attribution(
            image_model, square_data, "picture", square_query, row=row, metric=metric
        )
        expected = score_by_hand(vectors[row], square_query, metric)
        assert result.score == pytest.approx(expected, abs=1e-4)
        assert result.baseline_score == pytest.approx(baseline, abs=1e-4)
        gap = result.score - result.baseline_score
        assert abs(gap) > 0.01, "the row and the mean image differ in similarity"
        assert result.total == pytest.approx(gap, rel=0.05)
        assert result.completeness_gap == pytest.approx(result.total - gap)
        assert result.attributions.shape == (1, SIZE, SIZE)
        assert result.map.shape == (SIZE, SIZE)
        assert np.all(result.map >= 0)
        grid = np.asarray(result.summary["mass_4x4"])
        assert grid.sum() == pytest.approx(1.0, abs=1e-3)


def test_few_steps_break_completeness_and_more_restore_it(image_model, square_data, square_query):
    """The check can fail: one step (a plain gradient × input) leaves a visible error."""
    errors = {
        steps: abs(
            similarity_attribution(
                image_model, square_data, "picture", square_query, row=6, steps=steps
            ).completeness_gap
        )
        for steps in (1, 64)
    }
    assert errors[64] < errors[1] / 5


def test_a_square_query_is_explained_by_the_square_quadrant(image_model, square_data, square_query):
    """Stored pictures with their square in the top-left quadrant, a query of a lone square
    there: most of |attribution| lies in that quadrant (a quarter of the pixels)."""
    shares, inside, total = [], 0.0, 0.0
    for row in range(0, 20, 2):  # even rows hold a square
        mass = similarity_attribution(
            image_model, square_data, "picture", square_query, row=row
        ).map
        inside += mass[:QUADRANT, :QUADRANT].sum()
        total += mass.sum()
        shares.append(mass[:QUADRANT, :QUADRANT].sum() / mass.sum())
    assert inside / total > 0.5, f"only {inside / total:.0%} of |attribution| in the quadrant"
    assert np.median(shares) > 0.5


def test_other_inputs_do_not_move_the_map(av_model, shapes, tmp_path):
    """Swapping the row's sound changes the model's full vector but neither the masked score
    nor the map; features from `Model.encode` (sound present) give the same result."""
    table = read_table(shapes)
    frame = table.frame.copy()
    row, other = 0, 2  # the same shape, the other pitch
    assert frame.loc[row, "label"].split("-")[1] != frame.loc[other, "label"].split("-")[1]
    query = av_model.embed(shapes, column="picture")[4]
    swapped = frame.copy()
    swapped.loc[row, "sound"] = frame.loc[other, "sound"]
    swapped_path = table.base_dir / "swapped.csv"
    swapped.to_csv(swapped_path, index=False)

    full = av_model.embed(shapes)[row]
    full_swapped = av_model.embed(swapped_path)[row]
    assert not np.allclose(full, full_swapped, atol=1e-3), "with every input, the sound counts"

    results = [
        similarity_attribution(av_model, data, "picture", query, row=row)
        for data in (shapes, swapped_path, av_model.encode(swapped_path))
    ]
    expected = cosine(av_model.embed(shapes, column="picture")[row], query)
    for result in results:
        assert result.score == pytest.approx(expected, abs=1e-5)
        np.testing.assert_allclose(result.attributions, results[0].attributions, atol=1e-6)
    assert results[0].attributions.shape == (3, 16, 16)
    assert results[0].map.max() > 0


def test_a_recording_hit_is_explained_over_its_spectrogram(av_model, shapes, tmp_path):
    """Audio is explained like an image: the attributions are shaped like the mel frames,
    add up to the score gap, and the audio figure and summary are the audio modality's."""
    query = av_model.embed(shapes, column="sound")[4]
    result = similarity_attribution(av_model, shapes, "sound", query, row=1, steps=64)
    features = av_model.encode(shapes)["sound"]
    assert result.kind == "audio"
    assert result.attributions.shape == tuple(features["values"].shape[1:])
    assert result.length == int(features["lengths"][1])
    expected = cosine(av_model.embed(shapes, column="sound")[1], query)
    assert result.score == pytest.approx(expected, abs=1e-5)
    assert abs(result.completeness_gap) < 0.05 * max(
        abs(result.score - result.baseline_score), 0.01
    )
    assert set(result.summary) >= {"frame_share", "mel_share", "score"}
    assert sum(result.summary["frame_share"]) == pytest.approx(1.0, abs=1e-3)
    path = write_similarity_figure(av_model, result, tmp_path / "sound.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_continuous_inputs_and_well_formed_queries_are_explained(
    av_model, full_model, shapes, tmp_path
):
    model, _folder = full_model
    text_query = model.embed(shapes, column="comment")[0]
    with pytest.raises(BadInputError, match="'comment' is text: .*continuous values \\(audio, "):
        similarity_attribution(model, shapes, "comment", text_query)
    query = av_model.embed(shapes, column="picture")[0]
    with pytest.raises(BadInputError, match="no input named 'photo'"):
        similarity_attribution(av_model, shapes, "photo", query)
    with pytest.raises(BadInputError, match="metric 'manhattan'"):
        similarity_attribution(av_model, shapes, "picture", query, metric="manhattan")
    with pytest.raises(BadInputError, match="one vector of 32 numbers"):
        similarity_attribution(av_model, shapes, "picture", query[:8])
    with pytest.raises(BadInputError, match="all zeros"):
        similarity_attribution(av_model, shapes, "picture", np.zeros_like(query))
    with pytest.raises(BadInputError, match="row 500 is out of range"):
        similarity_attribution(av_model, shapes, "picture", query, row=500)
    broken = read_table(shapes).frame.head(2).copy()
    broken.loc[1, "picture"] = "img/none.png"
    broken_path = read_table(shapes).base_dir / "broken.csv"
    broken.to_csv(broken_path, index=False)
    with pytest.raises(BadInputError, match="row 1, column 'picture', file img/none.png"):
        similarity_attribution(av_model, broken_path, "picture", query, row=1)
    broken.loc[0, "picture"] = None
    broken.to_csv(broken_path, index=False)
    with pytest.raises(BadInputError, match="row 0 has no 'picture': the cell is empty"):
        similarity_attribution(av_model, broken_path, "picture", query, row=0)


def test_figure_and_explain_hit_write_a_png(av_model, shapes, tmp_path):
    query = av_model.embed(shapes, column="picture")[5]
    result = similarity_attribution(av_model, shapes, "picture", query, row=3)
    path = write_similarity_figure(av_model, result, tmp_path / "figs" / "hit.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as picture:
        assert picture.width > 2 * picture.height  # image, map, overlay side by side

    db = tmp_path / "vectors"
    Index.create(db, dim=32, metric="dot")
    write_source(db, IndexSource(model=str(tmp_path), column="picture", kind="image"))
    found = explain_hit(av_model, shapes, {"row": 3}, query, tmp_path / "hit.png", db=db)
    assert (tmp_path / "hit.png").read_bytes()[:4] == b"\x89PNG"
    assert (found.input, found.metric) == ("picture", "dot")
    vector = av_model.embed(shapes, column="picture")[3]
    assert found.score == pytest.approx(float(vector @ query), abs=1e-4)
    again = explain_hit(
        av_model, shapes, pd.Series({"row": 3}), query, tmp_path / "again.png", column="picture"
    )
    np.testing.assert_allclose(again.attributions, result.attributions, atol=1e-6)
    with pytest.raises(BadInputError, match="pass column="):
        explain_hit(av_model, shapes, 3, query, tmp_path / "x.png")
