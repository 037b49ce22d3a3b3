"""Every fusion: output shapes, weights, and masking (an absent input cannot leak in)."""

import pytest
import torch

from polymodal.config import ModelSettings
from polymodal.encoders import EncodedInput
from polymodal.fusion import FUSIONS, pooled
from polymodal.fusion.base import inputs_present

SETTINGS = ModelSettings(dim=16, layers=1, heads=2, dropout=0.0)
NAMES = ["a", "b"]


def encoded(b_present: torch.Tensor, seed: int = 0) -> dict[str, EncodedInput]:
    generator = torch.Generator().manual_seed(seed)
    a = EncodedInput(torch.randn(3, 4, 16, generator=generator), torch.ones(3, 4, dtype=torch.bool))
    b_mask = b_present[:, None].expand(-1, 5).clone()
    b = EncodedInput(torch.randn(3, 5, 16, generator=generator), b_mask)
    return {"a": a, "b": b}


@pytest.mark.parametrize("name", FUSIONS.names())
def test_shapes_and_weights(name):
    fusion = FUSIONS.create(name, NAMES, SETTINGS).eval()
    fused = fusion(encoded(torch.tensor([True, False, True])))
    assert fused.features.shape == (3, fusion.branches, 16)
    assert fused.weights.shape == (3, fusion.branches)
    assert torch.allclose(fused.weights.sum(dim=1), torch.ones(3))
    assert torch.isfinite(fused.features).all()


@pytest.mark.parametrize("name", FUSIONS.names())
def test_absent_input_is_masked_not_read(name):
    """Changing the tokens of an absent input leaves the output unchanged; a present one not."""
    fusion = FUSIONS.create(name, NAMES, SETTINGS).eval()
    absent = torch.tensor([False, False, False])
    first, second = encoded(absent, seed=0), encoded(absent, seed=1)
    second["a"] = first["a"]  # same present input, different garbage in the absent one
    out1, out2 = fusion(first), fusion(second)
    assert torch.allclose(pooled(out1), pooled(out2), atol=1e-6)
    present = torch.tensor([True, True, True])
    out3, out4 = fusion(encoded(present, 0)), fusion({**encoded(present, 1), "a": first["a"]})
    assert not torch.allclose(out3.features, out4.features)


@pytest.mark.parametrize("name", FUSIONS.names())
def test_inputs_present_skips_the_always_real_readout(name):
    """The read-out tokens are real in every row; `inputs_present` says whether any input is."""
    fusion = FUSIONS.create(name, NAMES, SETTINGS).eval()
    items = encoded(torch.tensor([True, False, False]))
    items["a"] = EncodedInput(
        items["a"].tokens, torch.tensor([[True] * 4, [True] * 4, [False] * 4])
    )
    fused = fusion(items)
    assert fused.memory_mask[:, : fused.readout].all()
    assert inputs_present(fused).tolist() == [True, True, False]


@pytest.mark.parametrize("name", FUSIONS.names())
def test_pooled_is_one_vector_per_row_weighted_like_the_heads(name):
    fusion = FUSIONS.create(name, NAMES, SETTINGS).eval()
    fused = fusion(encoded(torch.tensor([True, False, True])))
    vector = pooled(fused)
    assert vector.shape == (3, 16)
    by_hand = sum(fused.features[:, i] * fused.weights[:, i, None] for i in range(fusion.branches))
    assert torch.allclose(vector, by_hand, atol=1e-6)
    if fusion.branches == 1:  # early fusion: the fused vector itself
        assert torch.allclose(vector, fused.features[:, 0])


def test_late_fusion_weights_only_present_inputs():
    fusion = FUSIONS.create("late", NAMES, SETTINGS).eval()
    fused = fusion(encoded(torch.tensor([False, True, False])))
    assert torch.allclose(fused.weights[0], torch.tensor([1.0, 0.0]))
    assert fused.weights[1, 1] > 0


def test_row_with_no_input_at_all_stays_finite():
    for name in FUSIONS.names():
        fusion = FUSIONS.create(name, NAMES, SETTINGS).eval()
        items = encoded(torch.tensor([False, False, False]))
        items["a"] = EncodedInput(items["a"].tokens, torch.zeros(3, 4, dtype=torch.bool))
        fused = fusion(items)
        assert torch.isfinite(fused.features).all() and torch.isfinite(fused.weights).all()


class CrossAttentionDecoder(torch.nn.Module):
    """The shape a text or image decoder takes: learned queries cross-attend to the memory."""

    def __init__(self, dim: int, queries: int = 3) -> None:
        super().__init__()
        self.queries = torch.nn.Parameter(torch.randn(1, queries, dim))
        self.attention = torch.nn.MultiheadAttention(dim, 2, batch_first=True)

    def forward(self, memory, mask):
        queries = self.queries.expand(memory.shape[0], -1, -1)
        return self.attention(
            queries, memory, memory, key_padding_mask=~mask, average_attn_weights=False
        )


@pytest.mark.parametrize("name", FUSIONS.names())
def test_memory_keeps_every_input_token_with_its_mask(name):
    fusion = FUSIONS.create(name, NAMES, SETTINGS).eval()
    b_present = torch.tensor([True, False, True])
    fused = fusion(encoded(b_present))
    batch, tokens, dim = fused.memory.shape
    assert (batch, dim) == (3, 16) and fused.memory_mask.shape == (3, tokens)
    assert tokens >= 4 + 5  # every token of a and b is there
    assert fused.memory_mask[:, 0].all()  # the read-out is always real
    assert int(fused.memory_mask[1].sum()) == int(fused.memory_mask[0].sum()) - 5  # b's 5 gone


@pytest.mark.parametrize("name", FUSIONS.names())
def test_memory_is_the_readout_then_each_input_in_order(name):
    """The layout `MultimodalNet.fuse_encoded` reads each input's span from (`Fused.timed`)."""
    fusion = FUSIONS.create(name, NAMES, SETTINGS).eval()
    b_present = torch.tensor([True, False, True])
    fused = fusion(encoded(b_present))
    assert fused.memory.shape[1] == fused.readout + 4 + 5
    b_mask = fused.memory_mask[:, fused.readout + 4 :]
    assert torch.equal(b_mask, b_present[:, None].expand(-1, 5))


@pytest.mark.parametrize("name", FUSIONS.names())
def test_decoder_on_memory_gives_masked_tokens_no_attention(name):
    torch.manual_seed(0)
    fusion = FUSIONS.create(name, NAMES, SETTINGS).eval()
    decoder = CrossAttentionDecoder(16).eval()
    b_present = torch.tensor([True, False, True])
    fused = fusion(encoded(b_present))
    outputs, weights = decoder(fused.memory, fused.memory_mask)  # [batch, heads, queries, tokens]
    masked = ~fused.memory_mask[:, None, None, :].expand_as(weights)
    assert masked.any()
    assert torch.equal(weights[masked], torch.zeros_like(weights[masked]))
    assert torch.allclose(weights.sum(-1), torch.ones_like(weights.sum(-1)), atol=1e-5)
    # what sits behind the mask cannot change what the decoder reads
    other = encoded(b_present, seed=0)
    other["b"] = EncodedInput(
        other["b"].tokens + 100 * (~other["b"].mask)[..., None], other["b"].mask
    )
    fused2 = fusion(other)
    outputs2, _ = decoder(fused2.memory, fused2.memory_mask)
    assert torch.allclose(outputs[1], outputs2[1], atol=1e-5)
    assert torch.isfinite(outputs).all()
