"""Word dropout and character typos on the raw text, re-tokenised by the model's tokenizer."""

from __future__ import annotations

import numpy as np
import torch

from polymodal.data.column import is_missing
from polymodal.data.problems import ProblemLog
from polymodal.modalities.text.preprocess import TextState, encode_text

LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def drop_words(cell: object, p: float, rng: np.random.Generator) -> object:
    if is_missing(cell):
        return cell
    words = str(cell).split()
    return " ".join(w for w in words if rng.random() >= p)


def typos(cell: object, p: float, rng: np.random.Generator) -> object:
    """Each letter replaced by a random one with probability p."""
    if is_missing(cell):
        return cell
    chars = np.array(list(str(cell)))
    if chars.size == 0:
        return cell
    hit = (rng.random(chars.size) < p) & np.char.isalpha(chars)
    chars[hit] = rng.choice(LETTERS, int(hit.sum()))
    return "".join(chars.tolist())


def retokenised(state: TextState, cells: list) -> dict:
    """Edited text through the model's own tokenizer; a row left empty becomes absent."""
    column = encode_text(state, cells, ProblemLog())
    return {
        "values": torch.from_numpy(column.values),
        "present": torch.from_numpy(column.present),
        "lengths": torch.from_numpy(column.lengths),
    }
