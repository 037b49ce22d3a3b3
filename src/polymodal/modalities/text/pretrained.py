"""What a pretrained text backbone dictates: its own fast tokenizer and longest input."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.data.pretrained import PretrainedState
from polymodal.encoders.base import lengths_mask


def pretrained_tokenizer(state: PretrainedState) -> tuple[str, int]:
    """(the fast tokenizer's own JSON, the longest input the model takes)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(state.folder)
    if not tokenizer.is_fast:
        from polymodal.hub import PretrainedUnavailable

        raise PretrainedUnavailable(
            f"{state.choice.source}: polymodal needs a fast (tokenizer.json) tokenizer"
        )
    longest = state.architecture.get("max_position_embeddings") or 512
    if 0 < tokenizer.model_max_length < 100_000:
        longest = min(longest, tokenizer.model_max_length)
    return tokenizer.backend_tokenizer.to_str(), int(longest)


def text_tokens(
    backbone: nn.Module, values: torch.Tensor, lengths: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids through the backbone with their attention mask: ([batch, steps, width], mask)."""
    mask = lengths_mask(lengths, values.shape[1]) if lengths is not None else values != 0
    hidden = backbone(input_ids=values.long(), attention_mask=mask.long()).last_hidden_state
    return hidden, mask
