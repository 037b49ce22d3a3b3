"""Text: a WordPiece tokenizer trained on the column (or a pretrained model's), a small
transformer (or a pretrained language model), word dropout and typos, per-token attributions
at the embedding, and a text area on the page."""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer

from polymodal.modalities.base import EncodeContext, FitContext, Modality, Sweep, Widget, register
from polymodal.modalities.common import valid_steps
from polymodal.modalities.text import encoder  # noqa: F401  (registers the encoders)
from polymodal.modalities.text.noise import drop_words, retokenised, typos
from polymodal.modalities.text.preprocess import TextState, encode_text, fit_text
from polymodal.modalities.text.pretrained import text_tokens


@register
class Text(Modality):
    name = "text"
    state = TextState
    embedded = pretrained = True
    tower = "text_model"
    widget = Widget("textarea")
    query = "text"

    def fit(self, cells: list, column: str, source: str, context: FitContext) -> TextState:
        return fit_text(cells, column, context.settings.text, source, context.pretrained)

    def encode(self, state: TextState, cells: list, context: EncodeContext) -> Any:
        return encode_text(state, cells, context.log, context.row_ids)

    def sweeps(self, state: TextState, item: dict, cells: list, base_dir: Any) -> list[Sweep]:
        name = state.column
        return [
            Sweep(name, "word dropout", "fraction of words", [0.1, 0.2, 0.4, 0.6, 0.8],
                  lambda p, rng: retokenised(state, [drop_words(c, p, rng) for c in cells])),
            Sweep(name, "typos", "fraction of letters", [0.02, 0.05, 0.1, 0.2, 0.4],
                  lambda p, rng: retokenised(state, [typos(c, p, rng) for c in cells])),
        ]  # fmt: skip

    def summarise(self, state: TextState, item: Any) -> dict:
        """Each real token with its score (the page highlights them)."""
        count = valid_steps(item)
        tokenizer = Tokenizer.from_str(state.tokenizer)
        ids = item.values[:count].astype(int)
        return {
            "tokens": [tokenizer.id_to_token(int(i)) or "?" for i in ids],
            "scores": [round(float(s), 6) for s in item.attributions[:count]],
        }

    def backbone_tokens(
        self, backbone: Any, pretrained: Any, values: torch.Tensor, lengths: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return text_tokens(backbone, values, lengths)
