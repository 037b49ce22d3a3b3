"""Pretrained decoders for text targets: a tiny GPT-2 (new cross-attention), T5, BART and
Whisper's decoder, each fitted on a table whose category names a phrase; the key/value cache
against full forwards, greedy against beam 1, the training modes, and saved models reloading
offline with the same texts and log-probabilities.

The models are tiny random ones made here with their own tokenizers: no network.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from polymodal import Model
from polymodal.config import Config, ConfigError
from polymodal.data.problems import BadInputError
from polymodal.network import MultimodalNet
from polymodal.options import apply_options
from polymodal.tasks.text.pretrained import PretrainedDecoder
from polymodal.tasks.text.search import beam_search, greedy
from polymodal.tasks.text.tokenizer import token_ids

PHRASES = {
    "circle": "a red circle",
    "squares": "two blue squares",
    "star": "the green star",
    "empty": "nothing here at all",
    "dot": "one small dot",
}
FAMILIES = ["gpt2", "t5", "bart", "whisper"]


# --- tiny sources --------------------------------------------------------------------------------


def byte_bpe(specials: list[str]) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tokenizer.train_from_iterator(list(PHRASES.values()), trainer=trainer)
    return tokenizer


def unigram(specials: list[str]) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=60, special_tokens=specials, unk_token="<unk>", show_progress=False
    )
    tokenizer.train_from_iterator(list(PHRASES.values()) * 20, trainer=trainer)
    return tokenizer


def save_source(folder: Path, tokenizer: object, model: torch.nn.Module, **tokens: str) -> Path:
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=tokenizer, **tokens).save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def gpt2_folder(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = byte_bpe(["<|endoftext|>"])
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(), n_embd=32, n_layer=2, n_head=2, n_positions=64,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    end = "<|endoftext|>"
    return save_source(
        folder, tokenizer, GPT2LMHeadModel(config), bos_token=end, eos_token=end, unk_token=end
    )


def t5_folder(folder: Path) -> Path:
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = unigram(["<pad>", "</s>", "<unk>"])
    config = T5Config(
        vocab_size=tokenizer.get_vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=1,
        num_decoder_layers=2, num_heads=4, decoder_start_token_id=0, pad_token_id=0,
        eos_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    return save_source(
        folder, tokenizer, model, eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def bart_folder(folder: Path) -> Path:
    from transformers import BartConfig, BartForConditionalGeneration

    tokenizer = byte_bpe(["<s>", "<pad>", "</s>", "<unk>"])
    config = BartConfig(
        vocab_size=tokenizer.get_vocab_size(), d_model=32, encoder_layers=1, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=64, bos_token_id=0, pad_token_id=1,
        eos_token_id=2, decoder_start_token_id=2, forced_bos_token_id=None,
        forced_eos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    return save_source(
        folder, tokenizer, BartForConditionalGeneration(config), bos_token="<s>",
        eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
    )  # fmt: skip


def whisper_folder(folder: Path) -> Path:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    tokenizer = byte_bpe(["<|endoftext|>", "<|startoftranscript|>"])
    config = WhisperConfig(
        vocab_size=tokenizer.get_vocab_size(), d_model=32, encoder_layers=1, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, num_mel_bins=8, max_source_positions=16, max_target_positions=64,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, decoder_start_token_id=1,
        suppress_tokens=[], begin_suppress_tokens=[],
    )  # fmt: skip
    torch.manual_seed(0)
    end = "<|endoftext|>"
    return save_source(
        folder, tokenizer, WhisperForConditionalGeneration(config), bos_token=end,
        eos_token=end, pad_token=end, unk_token=end,
    )  # fmt: skip


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoders")
    return {name: globals()[f"{name}_folder"](root / name) for name in FAMILIES}


def table(rows: int = 48, seed: int = 0) -> pd.DataFrame:
    """A category column that names a phrase: the text target is a function of it."""
    rng = np.random.default_rng(seed)
    shapes = rng.choice(list(PHRASES), rows)
    frame = pd.DataFrame({"shape": shapes, "caption": [PHRASES[s] for s in shapes]})
    frame["split"] = np.where(np.arange(rows) >= rows - 8, "test", "train")
    return frame


def fit(source: Path, mode: str = "finetune", epochs: int = 2) -> Model:
    options = {"decoder": str(source), "decoder_mode": mode, "decoder_lr_scale": 0.5}
    config = Config.model_validate(
        {
            "targets": [{"column": "caption", "task": "text", "options": options}],
            "inputs": ["shape"],
            "model": {"dim": 32, "layers": 1, "heads": 2},
            "train": {"max_epochs": epochs, "batch_size": 16, "lr": 3e-3},
        }
    )
    return Model(config=config).fit(table())


@pytest.fixture(scope="module")
def models(sources):
    return {}


def fitted(models: dict, sources: dict, name: str) -> Model:
    if name not in models:
        models[name] = fit(sources[name])
    return models[name]


def decoder_of(model: Model) -> PretrainedDecoder:
    decoder = model.head("caption").decoder
    assert isinstance(decoder, PretrainedDecoder)
    return decoder


# --- every family --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_trains_predicts_and_reloads_offline(models, sources, name, tmp_path):
    model = fitted(models, sources, name)
    rows = table(seed=1).head(6)
    before = model.predict(rows)
    assert all(isinstance(text, str) for text in before["caption_predicted"])
    assert np.isfinite(before["caption_log_probability"]).all()
    assert model.metrics_["test"]["caption"]["rows"] == 8

    model.save(tmp_path / "m")
    saved = (tmp_path / "m" / "config.json").read_text()
    assert str(sources[name]) in saved  # where it came from, for the record only
    moved = tmp_path / "source-gone"
    sources[name].rename(moved)  # the source is not read again: architecture + own weights
    try:
        loaded = Model.load(tmp_path / "m")
        after = loaded.predict(rows)
    finally:
        moved.rename(sources[name])
    assert list(after["caption_predicted"]) == list(before["caption_predicted"])
    np.testing.assert_allclose(
        after["caption_log_probability"], before["caption_log_probability"], atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("name", FAMILIES)
def test_cache_masks_and_searches(models, sources, name):
    model = fitted(models, sources, name)
    decoder = decoder_of(model).eval()
    task = model.task("caption")
    texts = list(PHRASES.values())[:4]
    tokens = torch.as_tensor(
        token_ids(task.tokenizer, texts, task.text.max_length, task.text.special)
    )
    generator = torch.Generator().manual_seed(0)
    memory = torch.randn(4, 5, 32, generator=generator)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1, 3:] = False
    mask[3] = False  # no memory at all: finite outputs
    with torch.no_grad():
        full = decoder(tokens[:, :-1], memory, mask)
        assert full.shape[-1] == decoder.vocab_size and torch.isfinite(full).all()
        cache = decoder.start(memory, mask)
        for t in range(tokens.shape[1] - 1):
            logits, cache = decoder.step(tokens[:, t], cache)
            torch.testing.assert_close(logits, full[:, t], atol=1e-4, rtol=0)
        slow = decoder.step_without_cache(tokens[:, :3], memory, mask)
        torch.testing.assert_close(slow, full[:, 2], atol=1e-4, rtol=0)

        changed = memory.clone()
        changed[~mask] = 100.0  # masked memory changes nothing
        torch.testing.assert_close(decoder(tokens[:, :-1], changed, mask)[:3], full[:3])

        ids, scores = greedy(decoder, memory, mask, max_length=8)
        beam_ids, beam_scores = beam_search(decoder, memory, mask, beam=1, max_length=8)
        assert torch.equal(beam_ids[:, 0], ids)
        torch.testing.assert_close(beam_scores[:, 0], scores)
        _, three = beam_search(decoder, memory, mask, beam=3, max_length=8, nbest=2)
        assert (three[:, 0] >= three[:, 1]).all()


def test_greedy_is_beam_one_through_the_model(models, sources):
    model = fitted(models, sources, "gpt2")
    rows = table(seed=2).head(6)
    greedy_rows = model.predict(rows)
    model.set_decoding(beam=1)
    assert greedy_rows.equals(model.predict(rows))


# --- modes ---------------------------------------------------------------------------------------


def source_weights(folder: Path, causal: bool) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForCausalLM if causal else AutoModelForSeq2SeqLM
    return auto.from_pretrained(folder).state_dict()


def initial_decoder(model: Model) -> PretrainedDecoder:
    """The decoder as fitting built it, before training (the same seed, the same order)."""
    torch.manual_seed(model.config.train.seed)
    net = MultimodalNet(model.schema_, model.config.model)
    net.load_pretrained_weights()
    return net.heads[0].decoder


def pretrained_state(decoder: PretrainedDecoder) -> dict[str, torch.Tensor]:
    """The decoder's model weights under the source's names (LoRA's base layers unwrapped)."""
    return {k.replace(".base_layer", ""): v for k, v in decoder.model.state_dict().items()}


def test_frozen_trains_only_the_projection_and_the_new_cross_attention(sources):
    model = fit(sources["gpt2"], mode="frozen")
    decoder, start = decoder_of(model), initial_decoder(model)
    source = source_weights(sources["gpt2"], causal=True)
    state = pretrained_state(decoder)
    assert len(source) >= 20 and all(torch.equal(state[k], v) for k, v in source.items())
    assert decoder.new and all("cross" in name for name in decoder.new)
    assert not torch.equal(decoder.project.weight, start.project.weight)
    new = next(iter(sorted(decoder.new)))
    assert not torch.equal(
        dict(decoder.model.named_parameters())[new], start.model.state_dict()[new]
    )
    frozen = model.net_.frozen_state_names()
    assert "heads.0.decoder.model.lm_head.weight" in frozen  # tied to the frozen embedding
    assert not any("project" in name or "cross" in name for name in frozen)


def test_lora_adds_adapters_and_keeps_the_pretrained_weights(sources, tmp_path):
    model = fit(sources["t5"], mode="lora")
    decoder = decoder_of(model)
    lora = {n: p for n, p in decoder.model.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert any(bool(p.abs().sum() > 0) for n, p in lora.items() if "lora_B" in n), "not trained"
    source = source_weights(sources["t5"], causal=False)
    state = pretrained_state(decoder)
    compared = [k for k in source if k in state]
    assert len(compared) >= 20 and all(torch.equal(state[k], source[k]) for k in compared)
    scales = model.net_.learning_rate_scales()
    assert {scales[f"heads.0.decoder.model.{n}"] for n in lora} == {0.5}
    rows = table(seed=3).head(4)
    loaded = Model.load(model.save(tmp_path / "m"))
    assert list(loaded.predict(rows)["caption_predicted"]) == list(
        model.predict(rows)["caption_predicted"]
    )


# --- options -------------------------------------------------------------------------------------


def test_decoder_option_and_unavailable_sources(tmp_path):
    config = apply_options(Config(), {"target": "caption,label", "decoder": ["caption=hf:gpt2"]})
    caption, label = config.targets
    assert caption.task == "text" and caption.options == {"decoder": "hf:gpt2"}
    assert label.options == {}
    with pytest.raises(ConfigError, match="not a target"):
        apply_options(Config(), {"target": "label", "decoder": ["caption=hf:gpt2"]})
    with pytest.raises(BadInputError, match="decoder source"):
        fit(tmp_path / "nothing-here")
