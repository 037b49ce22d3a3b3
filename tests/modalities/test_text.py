"""Text: the tokenizer, and cells that are not valid UTF-8."""

from tokenizers import Tokenizer

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


def test_the_same_column_gives_the_same_token_ids_every_time():
    """The WordPiece trainer numbers tokens in hash-map order; fitting numbers them in a fixed
    order, so a seeded run repeats (the same ids, hence the same embedding rows)."""
    cells = [f"sample number {i} looks {['fine', 'odd', 'plain'][i % 3]}" for i in range(40)]
    first, second = (fit_text(cells, "c", TextSettings(), "c") for _ in range(2))
    assert first.tokenizer == second.tokenizer
    ids = Tokenizer.from_str(first.tokenizer).get_vocab()
    assert [ids["[PAD]"], ids["[UNK]"], ids["[CLS]"]] == [0, 1, 2]
