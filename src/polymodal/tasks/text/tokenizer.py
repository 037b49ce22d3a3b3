"""The tokenizer of a text target, trained on the training rows of that column.

Two kinds: word pieces (captions, answers: whole words where the data repeats them, pieces
of rare ones) and characters (transcripts, where a word never seen in training must still be
spelt). Both number their vocabulary in a fixed order, so a seeded run repeats, and reserve
the same four ids, which the decoder relies on.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal, NamedTuple

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
CHARACTERS = "char"
TokenizerKind = Literal["wordpiece", "char"]


def normaliser(lowercase: bool) -> normalizers.Normalizer:
    steps = [normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    return normalizers.Sequence(steps + ([normalizers.Lowercase()] if lowercase else []))


def train_target_tokenizer(
    texts: list[str], kind: TokenizerKind, vocab_size: int, lowercase: bool
) -> Tokenizer:
    """A tokenizer over `texts` whose ids 0-3 are PAD, BOS, EOS, UNK."""
    if kind == CHARACTERS:
        return character_tokenizer(texts, lowercase)
    return word_tokenizer(texts, vocab_size, lowercase)


def word_tokenizer(texts: list[str], vocab_size: int, lowercase: bool) -> Tokenizer:
    """Whole words, the most frequent first, and every character seen (as a word start and as
    a `##` continuation), so a word outside the vocabulary is still spelt out.

    Built directly rather than with the WordPiece trainer, whose tie-breaking between equally
    frequent merges changes from run to run: the same column must give the same ids."""
    normalise = normaliser(lowercase)
    split = pre_tokenizers.BertPreTokenizer()
    counts = Counter(
        word for text in texts for word, _ in split.pre_tokenize_str(normalise.normalize_str(text))
    )
    characters = sorted({c for word in counts for c in word})
    pieces = set(characters) | {f"##{c}" for c in characters}
    room = max(0, vocab_size - len(SPECIALS) - len(pieces))
    frequent = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:room]
    ordered = [*SPECIALS, *sorted(pieces | {word for word, _ in frequent})]
    tokenizer = Tokenizer(
        models.WordPiece({token: i for i, token in enumerate(ordered)}, unk_token=UNK)
    )
    tokenizer.normalizer = normalise
    tokenizer.pre_tokenizer = split
    tokenizer.decoder = decoders.WordPiece(cleanup=True)  # "a , b" -> "a, b"
    return tokenizer


def character_tokenizer(texts: list[str], lowercase: bool) -> Tokenizer:
    """One token per character (spaces included); decoding joins them back as they were."""
    normalise = normaliser(lowercase)
    characters = sorted({c for text in texts for c in normalise.normalize_str(text)})
    vocabulary = {token: index for index, token in enumerate([*SPECIALS, *characters])}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token=UNK))
    tokenizer.normalizer = normalise
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


class SpecialIds(NamedTuple):
    """Where a vocabulary keeps its padding, start and end tokens (ours: 0, 1, 2; a
    pretrained decoder's: wherever its tokenizer has them)."""

    pad: int = PAD_ID
    bos: int = BOS_ID
    eos: int = EOS_ID


def token_ids(
    tokenizer: Tokenizer, texts: list[str], max_length: int, special: SpecialIds = SpecialIds()
) -> np.ndarray:
    """[rows, max_length + 2] int64: BOS, at most `max_length` tokens, EOS, then PAD."""
    out = np.full((len(texts), max_length + 2), special.pad, dtype=np.int64)
    for row, encoding in enumerate(tokenizer.encode_batch(texts, add_special_tokens=False)):
        ids = encoding.ids[:max_length]
        out[row, 0] = special.bos
        out[row, 1 : len(ids) + 1] = ids
        out[row, len(ids) + 1] = special.eos
    return out


def texts_of(
    tokenizer: Tokenizer, ids: np.ndarray, special: SpecialIds = SpecialIds()
) -> list[str]:
    """Token ids (any PAD/BOS/EOS included) back to text; the text ends at the first EOS and
    an unknown token stays visible as [UNK], so it counts as an error when scored."""
    texts = []
    for row in np.asarray(ids, dtype=np.int64):
        ends = np.flatnonzero(row[1:] == special.eos) + 1 if len(row) else []
        row = row[: ends[0]] if len(ends) else row
        kept = [int(i) for i in row if i not in (special.pad, special.bos)]
        texts.append(tokenizer.decode(kept, skip_special_tokens=False).strip())
    return texts
