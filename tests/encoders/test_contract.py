"""One contract for every registered encoder: token shapes, masks, absent rows, finiteness."""

import pytest
import torch

from polymodal.config import AudioSettings, ModelSettings
from polymodal.encoders import ENCODERS
from polymodal.modalities.audio.preprocess import AudioState
from polymodal.modalities.category.preprocess import CategoryState
from polymodal.modalities.image.preprocess import ImageState
from polymodal.modalities.number.preprocess import NumberState
from polymodal.modalities.text.preprocess import TextState, train_tokenizer
from polymodal.modalities.video.preprocess import VideoState

SETTINGS = ModelSettings(dim=32, layers=1, heads=2)
BATCH = 4
# Pretrained encoders need a source folder: tests/encoders/test_pretrained.py covers them.
FROM_SCRATCH = [name for name in ENCODERS.names() if not ENCODERS.tags(name).get("pretrained")]


def example(kind: str):
    """(state, values, lengths) for a batch of BATCH rows of `kind`."""
    if kind == "text":
        tokenizer = train_tokenizer(["a small test sentence", "another one"], SETTINGS_TEXT)
        state = TextState(
            column="t", source="t", tokenizer=tokenizer.to_str(), max_tokens=6, vocab_size=40
        )
        values = torch.randint(3, 40, (BATCH, 6))
        lengths = torch.tensor([6, 3, 1, 0])
        values[1, 3:] = 0
        values[2, 1:] = 0
        values[3] = 0
        return state, values, lengths
    if kind == "image":
        state = ImageState(column="i", source="i", size=32, channels=3, mean=[0] * 3, std=[1] * 3)
        return state, torch.randn(BATCH, 3, 32, 32), None
    if kind == "audio":
        state = AudioState(
            column="a", source="a", settings=AudioSettings(n_mels=32), frames=40, mean=0, std=1
        )
        return state, torch.randn(BATCH, 32, 40), torch.tensor([40, 20, 8, 0])
    if kind == "video":
        state = VideoState(column="v", source="v", frames=4, size=32)
        return state, torch.randn(BATCH, 4, 3, 32, 32), None
    if kind == "number":
        return NumberState(column="n", source="n", mean=0, std=1), torch.randn(BATCH, 1), None
    state = CategoryState(column="c", source="c", vocabulary=["x", "y"])
    return state, torch.tensor([2, 3, 1, 0]), None


from polymodal.config import TextSettings  # noqa: E402

SETTINGS_TEXT = TextSettings(vocab_size=40)


@pytest.mark.parametrize("name", FROM_SCRATCH)
def test_encoder_contract(name):
    kind = ENCODERS.tags(name)["modality"]
    state, values, lengths = example(kind)
    encoder = ENCODERS.create(name, state, SETTINGS).eval()
    present = torch.tensor([True, True, True, False])
    encoded = encoder(values, present, lengths)
    tokens, mask = encoded
    assert tokens.ndim == 3 and tokens.shape[0] == BATCH and tokens.shape[2] == SETTINGS.dim
    assert mask.shape == tokens.shape[:2] and mask.dtype == torch.bool
    assert torch.isfinite(tokens).all(), "rows with nothing to attend to must stay finite"
    assert not mask[3].any(), "an absent row has no real tokens"
    assert mask[0].any(), "a present row has real tokens"
    if lengths is not None:
        assert mask[1].sum() < mask[0].sum(), "shorter inputs have fewer real tokens"


@pytest.mark.parametrize("name", FROM_SCRATCH)
def test_encoder_learns(name):
    """Gradients reach every parameter that the forward pass uses."""
    kind = ENCODERS.tags(name)["modality"]
    state, values, lengths = example(kind)
    encoder = ENCODERS.create(name, state, SETTINGS).train()
    tokens, mask = encoder(values, torch.ones(BATCH, dtype=torch.bool), lengths)
    # a random direction, not a plain sum: the sum of a LayerNorm's outputs does not depend on
    # its input, so through one a plain sum sends exactly zero gradient, or rounding noise
    direction = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(0))
    (tokens * mask[..., None] * direction).sum().backward()
    silent = [
        parameter
        for parameter, p in encoder.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not silent, f"{name}: no gradient reaches {silent}"


def test_unknown_encoder_names_the_known_ones():
    with pytest.raises(KeyError, match="image_cnn"):
        ENCODERS.get("no_such_encoder")
