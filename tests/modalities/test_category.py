"""Categories: the unknown bucket, and undecodable bytes reported as in a text column."""

from polymodal.config import TextSettings
from polymodal.data.problems import ProblemLog
from polymodal.modalities.category.preprocess import encode_categories, fit_category
from polymodal.modalities.text.preprocess import encode_text, fit_text
from tests.modalities.logs import reasons


def test_unknown_category_uses_the_unknown_bucket_and_is_reported():
    state = fit_category(["a", "b", "a"], "c", "c")
    log = ProblemLog()
    column = encode_categories(state, ["a", "z", None], log)
    assert column.values.tolist() == [2, 1, 0]
    assert column.present.tolist() == [True, True, False]
    assert "unknown category 'z'" in reasons(log)[1]


def test_undecodable_bytes_in_a_category_are_reported_like_text():
    cells = ["red", "blue", b"\xff\xfe raw", "bad \ufffd bytes", b"red"]
    state = fit_category(cells, "c", "c")
    assert state.vocabulary == ["blue", "red"], "bad cells are not values"
    log = ProblemLog()
    column = encode_categories(state, cells, log)
    assert column.present.tolist() == [True, True, False, False, True]
    text_log = ProblemLog()
    encode_text(fit_text(cells, "c", TextSettings(vocab_size=60), "c"), cells, text_log)
    assert (
        reasons(log)
        == reasons(text_log)
        == {2: "text is not valid UTF-8", 3: "text is not valid UTF-8"}
    )
