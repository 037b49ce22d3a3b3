"""Text: a WordPiece tokenizer trained on the training column with Hugging Face `tokenizers`.

The tokenizer is saved inside the model's config.json, so a saved model needs nothing else.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from polymodal.config import TextSettings
from polymodal.data.column import FeatureColumn, cell_text
from polymodal.data.pretrained import PretrainedState
from polymodal.data.problems import ProblemLog
from polymodal.modalities.text.pretrained import pretrained_tokenizer

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
MAX_TOKENS = 256


class TextState(BaseModel):
    kind: Literal["text"] = "text"
    column: str
    source: str
    tokenizer: str  # the tokenizer's own JSON
    max_tokens: int
    vocab_size: int
    pretrained: PretrainedState | None = None


def train_tokenizer(texts: list[str], settings: TextSettings) -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if settings.lowercase else [])
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=settings.vocab_size, special_tokens=[PAD, UNK, CLS], show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return with_ordered_vocabulary(tokenizer)


def with_ordered_vocabulary(tokenizer: Tokenizer) -> Tokenizer:
    """The same vocabulary numbered in a fixed order (special tokens first, then sorted).

    The WordPiece trainer numbers tokens in hash-map order, which changes from process to
    process, so the same column gave different ids and a seeded run did not repeat."""
    specials = [PAD, UNK, CLS]
    vocabulary = tokenizer.get_vocab()
    ordered = specials + sorted(token for token in vocabulary if token not in specials)
    tokenizer.model = models.WordPiece(
        {token: index for index, token in enumerate(ordered)}, unk_token=UNK
    )
    return tokenizer


def fit_text(
    cells: list[object],
    column: str,
    settings: TextSettings,
    source: str,
    pretrained: PretrainedState | None = None,
) -> TextState:
    """Our own tokenizer trained on the column, or the pretrained encoder's; the token limit
    is the 95th percentile of the training texts' lengths unless set."""
    texts = [text for text, _ in map(cell_text, cells) if text is not None]
    if pretrained:
        saved, longest = pretrained_tokenizer(pretrained)
        tokenizer = Tokenizer.from_str(saved)
        tokenizer.no_padding()
        tokenizer.no_truncation()
    else:
        tokenizer, longest = train_tokenizer(texts or [""], settings), MAX_TOKENS
    if settings.max_tokens:
        max_tokens = settings.max_tokens
    else:
        counts = [len(encoding.ids) for encoding in tokenizer.encode_batch(texts[:5000])]
        max_tokens = int(np.percentile(counts, 95)) + 1 if counts else 16
    return TextState(
        column=column,
        source=source,
        tokenizer=tokenizer.to_str(),
        max_tokens=int(min(max(max_tokens, 4), longest)),
        vocab_size=tokenizer.get_vocab_size(),
        pretrained=pretrained,
    )


def encode_text(
    state: TextState,
    cells: list[object],
    log: ProblemLog,
    row_ids: list[int] | None = None,
    tokenizer: Tokenizer | None = None,
) -> FeatureColumn:
    """Token ids [rows, max_tokens] padded with 0; `lengths` counts real tokens."""
    if tokenizer is None:
        tokenizer = Tokenizer.from_str(state.tokenizer)
        tokenizer.enable_truncation(state.max_tokens)  # keeps a pretrained model's end token
    rows = row_ids if row_ids is not None else range(len(cells))
    texts = []
    for row, cell in zip(rows, cells, strict=True):
        text, problem = cell_text(cell)
        if problem:
            log.add(int(row), state.column, None, problem)
        texts.append(text)
    values = np.zeros((len(texts), state.max_tokens), dtype=np.int64)
    lengths = np.zeros(len(texts), dtype=np.int64)
    present_rows = [i for i, text in enumerate(texts) if text is not None]
    encodings = tokenizer.encode_batch([texts[i] for i in present_rows])
    for index, encoding in zip(present_rows, encodings, strict=True):
        ids = encoding.ids[: state.max_tokens]
        values[index, : len(ids)] = ids
        lengths[index] = len(ids)
    return FeatureColumn(values, lengths > 0, lengths)
