"""Text: the tokenizer, and cells that are not valid UTF-8."""

from polymodal.config import TextSettings
from polymodal.data.problems import ProblemLog
from polymodal.modalities.text.preprocess import encode_text, fit_text
from tests.modalities.logs import reasons


def test_text_tokenizer_and_non_utf8(tmp_path):
    cells = ["the cat sat", "a dog ran far away", "bad \ufffd bytes", None, b"\xff\xfe raw"]
    state = fit_text(cells, "t", TextSettings(vocab_size=60), "t")
    log = ProblemLog()
    column = encode_text(state, cells, log)
    assert column.present.tolist() == [True, True, False, False, False]
    assert column.lengths[1] > column.lengths[0] > 0
    assert set(reasons(log)) == {2, 4} and "UTF-8" in reasons(log)[2]
