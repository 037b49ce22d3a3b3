"""A small pre-norm transformer decoder that generates a text target from fused token memory.

Written by hand rather than with `nn.TransformerDecoder` because generation needs a key/value
cache: `start` projects the memory into cross-attention keys/values once, and each `step` feeds
one new token, appending its self-attention keys/values to the cache, so a step costs the same
at any prefix length apart from the attention over that prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class DecoderCache:
    """Per-layer state carried between decoding steps.

    `self_keys`/`self_values`: one [B, heads, t, head_dim] tensor per layer, for the t tokens fed
    so far (grown by `TextDecoder.step`). `cross_keys`/`cross_values`: one [B, heads, M, head_dim]
    tensor per layer, computed once from the memory by `TextDecoder.start`. `memory_mask`: [B, M]
    bool, True = real memory token. `position`: the position the next fed token takes (0 = BOS).
    Steps return a new cache and never modify the one passed in.
    """

    self_keys: tuple[Tensor, ...]
    self_values: tuple[Tensor, ...]
    cross_keys: tuple[Tensor, ...]
    cross_values: tuple[Tensor, ...]
    memory_mask: Tensor
    position: int


def _split_heads(x: Tensor, heads: int) -> Tensor:
    batch, length, dim = x.shape
    return x.view(batch, length, heads, dim // heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


def _cross_attention(query: Tensor, key: Tensor, value: Tensor, memory_mask: Tensor, p: float):
    """Attention over memory that ignores masked positions; a row whose memory is entirely masked
    attends to nothing and gets zeros (instead of the NaN a fully masked softmax gives)."""
    real = memory_mask.any(dim=-1)  # [B]
    # Unmask every position of an empty row so the softmax is finite, then zero its output.
    allowed = (memory_mask | ~real[:, None])[:, None, None, :]  # [B, 1, 1, M]
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed, dropout_p=p)
    return out * real[:, None, None, None].to(out.dtype)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _split_heads(self.key(x), self.heads), _split_heads(self.value(x), self.heads)


class _DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(dim)
        self.self_attention = _Attention(dim, heads)
        self.cross_norm = nn.LayerNorm(dim)
        self.cross_attention = _Attention(dim, heads)
        self.feed_forward_norm = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim)
        )
        self.dropout = nn.Dropout(dropout)
        self.attention_dropout = dropout

    def forward(
        self,
        x: Tensor,
        self_kv: tuple[Tensor, Tensor] | None,
        cross_kv: tuple[Tensor, Tensor],
        memory_mask: Tensor,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x [B, T, dim]. With `self_kv` None, T tokens attend causally among themselves;
        otherwise T == 1 and the token attends to the cached keys/values and itself. Returns the
        new hidden states and the self-attention keys/values including x's."""
        p = self.attention_dropout if self.training else 0.0
        heads = self.self_attention.heads
        h = self.self_norm(x)
        query = _split_heads(self.self_attention.query(h), heads)
        key, value = self.self_attention.keys_values(h)
        if self_kv is not None:
            key = torch.cat([self_kv[0], key], dim=2)
            value = torch.cat([self_kv[1], value], dim=2)
        # A single new query may see every cached key, so only the full pass needs is_causal.
        attended = F.scaled_dot_product_attention(
            query, key, value, dropout_p=p, is_causal=self_kv is None and x.shape[1] > 1
        )
        x = x + self.dropout(self.self_attention.out(_merge_heads(attended)))

        h = self.cross_norm(x)
        query = _split_heads(self.cross_attention.query(h), heads)
        attended = _cross_attention(query, cross_kv[0], cross_kv[1], memory_mask, p)
        x = x + self.dropout(self.cross_attention.out(_merge_heads(attended)))

        x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))
        return x, (key, value)


class TextDecoder(nn.Module):
    """Token decoder over fused memory [B, M, dim]; output projection tied to the embedding.

    Positions 0..max_length are embedded (BOS plus up to `max_length` more tokens), so a search
    can generate up to `max_length` tokens (the last one possibly EOS).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        layers: int = 2,
        heads: int = 4,
        max_length: int = 64,
        dropout: float = 0.1,
        pad_id: int = 0,
        bos_id: int = 1,
        eos_id: int = 2,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        for name, value in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 <= value < vocab_size:
                raise ValueError(f"{name} {value} is outside the vocabulary of {vocab_size}")
        if eos_id in (pad_id, bos_id):
            raise ValueError("eos_id must differ from pad_id and bos_id")
        self.vocab_size = vocab_size
        self.dim = dim
        self.heads = heads
        self.max_length = max_length
        self.pad_id = pad_id
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.embedding_scale = math.sqrt(dim)
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Embedding(max_length + 1, dim)
        # Scaled by sqrt(dim) on input, so std dim**-0.5 gives unit-variance inputs and
        # unit-variance tied logits from the layer-normed output.
        nn.init.normal_(self.token_embedding.weight, std=dim**-0.5)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        self.embedding_dropout = nn.Dropout(dropout)
        self.memory_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(_DecoderLayer(dim, heads, dropout) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim)
        self.output_bias = nn.Parameter(torch.zeros(vocab_size))

    def _embed(self, tokens: Tensor, first_position: int) -> Tensor:
        length = tokens.shape[1]
        if first_position + length > self.max_length + 1:
            raise ValueError(
                f"position {first_position + length - 1} is past the decoder's max_length "
                f"{self.max_length} (+1 for BOS)"
            )
        positions = torch.arange(first_position, first_position + length, device=tokens.device)
        x = self.token_embedding(tokens) * self.embedding_scale + self.position_embedding(positions)
        return self.embedding_dropout(x)

    def _logits(self, x: Tensor) -> Tensor:
        return F.linear(self.final_norm(x), self.token_embedding.weight, self.output_bias)

    def _cross_keys_values(
        self, memory: Tensor, memory_mask: Tensor
    ) -> list[tuple[Tensor, Tensor]]:
        # Zero masked memory so its values cannot matter at all (even inf/NaN padding).
        memory = memory.to(self.token_embedding.weight.dtype)
        memory = memory.masked_fill(~memory_mask[..., None], 0.0)
        memory = self.memory_norm(memory)
        return [layer.cross_attention.keys_values(memory) for layer in self.layers]

    def forward(self, tokens: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """Teacher forcing: tokens [B, T] (BOS first), memory [B, M, dim], memory_mask [B, M]
        (True = real) -> logits [B, T, vocab]."""
        memory_mask = memory_mask.to(device=memory.device, dtype=torch.bool)
        cross = self._cross_keys_values(memory, memory_mask)
        x = self._embed(tokens.to(memory.device), 0)
        for layer, cross_kv in zip(self.layers, cross, strict=True):
            x, _ = layer(x, None, cross_kv, memory_mask)
        return self._logits(x)

    def start(self, memory: Tensor, memory_mask: Tensor) -> DecoderCache:
        """An empty cache for `memory`, with each layer's cross-attention keys/values."""
        memory_mask = memory_mask.to(device=memory.device, dtype=torch.bool)
        cross = self._cross_keys_values(memory, memory_mask)
        batch = memory.shape[0]
        empty = memory.new_zeros(batch, self.heads, 0, self.dim // self.heads)
        empty = empty.to(cross[0][0].dtype) if cross else empty
        return DecoderCache(
            self_keys=tuple(empty for _ in self.layers),
            self_values=tuple(empty for _ in self.layers),
            cross_keys=tuple(k for k, _ in cross),
            cross_values=tuple(v for _, v in cross),
            memory_mask=memory_mask,
            position=0,
        )

    def step(self, tokens: Tensor, cache: DecoderCache) -> tuple[Tensor, DecoderCache]:
        """Feed each row's newest token [B] -> next-token logits [B, vocab] and the grown cache."""
        x = self._embed(tokens.to(cache.memory_mask.device)[:, None], cache.position)
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            x, (key, value) = layer(
                x,
                (cache.self_keys[i], cache.self_values[i]),
                (cache.cross_keys[i], cache.cross_values[i]),
                cache.memory_mask,
            )
            keys.append(key)
            values.append(value)
        grown = DecoderCache(
            self_keys=tuple(keys),
            self_values=tuple(values),
            cross_keys=cache.cross_keys,
            cross_values=cache.cross_values,
            memory_mask=cache.memory_mask,
            position=cache.position + 1,
        )
        return self._logits(x[:, 0]), grown

    def step_without_cache(self, prefix: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """The slow path: prefix [B, t] (BOS first) -> next-token logits [B, vocab] by a full
        forward over the prefix."""
        return self.forward(prefix, memory, memory_mask)[:, -1]

    @staticmethod
    def reorder(cache: DecoderCache, indices: Tensor) -> DecoderCache:
        """A cache holding rows `indices` of `cache` (repeats allowed), e.g. surviving beams."""
        indices = indices.to(cache.memory_mask.device)

        def pick(tensors: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            return tuple(t.index_select(0, indices) for t in tensors)

        return DecoderCache(
            self_keys=pick(cache.self_keys),
            self_values=pick(cache.self_values),
            cross_keys=pick(cache.cross_keys),
            cross_values=pick(cache.cross_values),
            memory_mask=cache.memory_mask.index_select(0, indices),
            position=cache.position,
        )
