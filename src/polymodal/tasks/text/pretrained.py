"""Pretrained decoders for text targets: a Hugging Face causal language model (GPT-2 style) or
the decoder of an encoder-decoder model (T5, BART, Whisper) writes the target, with its own
tokenizer, cross-attending to polymodal's fused token memory in place of its encoder's output.

`PretrainedDecoder` has `TextDecoder`'s interface (forward / start / step / step_without_cache
/ reorder, `max_length`, `vocab_size`, `pad_id` / `bos_id` / `eos_id`), so the head and both
searches use it unchanged. The memory is projected from the model width to the decoder's
hidden size and normalised. A causal model is loaded with `add_cross_attention=True`: its
cross-attention layers are new and always train. An encoder-decoder model keeps its decoder
and LM head (its encoder is dropped) and reads the memory as `encoder_outputs`.

Searches never choose pad or BOS and stop at EOS, so those three must differ where the model's
own ids do not: GPT-2 starts and ends with the same token and has no pad token, BART starts
with its EOS, Whisper pads with its EOS. Such a pad or BOS gets an id past the model's
vocabulary (polymodal's own); on input BOS stands for the model's start token, and the logits
gain one column per such id, far below every real token (finite, so label smoothing stays
finite), which searches never pick.

Modes: `finetune` trains everything, the pretrained weights at `lr × lr_scale`; `frozen`
trains only the memory projection and a causal model's new cross-attention layers (the rest
stays as the source has it, in eval mode); `lora` adds peft adapters to the pretrained
attention projections and trains them (at `lr × lr_scale`) with what `frozen` trains.

A fitted decoder keeps the source's config (`FittedDecoder.architecture`), so a saved model
rebuilds the network offline and takes every weight from its own model.safetensors.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from polymodal.data.problems import BadInputError
from polymodal.hub import PretrainedUnavailable, hidden_size, resolve_source
from polymodal.tasks.text.tokenizer import SpecialIds

if TYPE_CHECKING:
    from tokenizers import Tokenizer

Family = Literal["causal", "seq2seq", "speech"]
DecoderMode = Literal["frozen", "finetune", "lora"]
# Attention projections that LoRA adapts (GPT-2: c_attn, q_attn; T5: q, k, v; BART, Whisper:
# q_proj, k_proj, v_proj; BERT-style: query, key, value).
LORA_TARGETS = {"c_attn", "q_attn", "q", "k", "v", "q_proj", "k_proj", "v_proj"}
LORA_TARGETS |= {"query", "key", "value", "qkv"}
FAR_BELOW = 30.0  # polymodal's own ids' logits: this far below the lowest real one
POSITION_FIELDS = ("max_target_positions", "n_positions", "max_position_embeddings")


class FittedDecoder(BaseModel):
    """A pretrained decoder as fitted: where it came from and what rebuilds it offline."""

    source: str
    folder: str
    family: Family
    architecture: dict  # the transformers config (a causal model's with cross-attention)
    start_id: int  # the model's own first decoder token, which BOS stands for
    model_vocab: int  # width of the model's logits; ids from here on are polymodal's own


@dataclass(frozen=True)
class PretrainedCache:
    """State carried between decoding steps. `past` is the model's key/value cache (None before
    the first step); transformers updates it in place, so only the cache a step or `reorder`
    returns may be used afterwards. `memory`: the projected memory [B, M, hidden];
    `memory_mask`: [B, M] bool; `position`: the position the next fed token takes."""

    past: Any
    memory: Tensor
    memory_mask: Tensor
    position: int


# --- fitting ------------------------------------------------------------------------------------


def fit_decoder(source: str, column: str) -> tuple[FittedDecoder, Tokenizer, SpecialIds, int]:
    """A pretrained decoder's source → (its fitted state, its fast tokenizer, the special ids
    polymodal uses, the most tokens a target may have)."""
    try:
        resolved = resolve_source(source, column)
    except PretrainedUnavailable as error:
        message = str(error).replace("encoder source", "decoder source")
        raise PretrainedUnavailable(message.replace("--encoder", "--decoder")) from None
    if resolved.library != "hf":
        raise BadInputError(f"target '{column}': decoder '{source}' is not a transformers model")
    from transformers import AutoConfig, AutoTokenizer

    with quiet_transformers():
        config = AutoConfig.from_pretrained(resolved.folder)
        tokenizer = AutoTokenizer.from_pretrained(resolved.folder)
    family = model_family(config, source)
    if family == "causal":
        config.is_decoder = True
        config.add_cross_attention = True
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise BadInputError(f"target '{column}': decoder '{source}' has no fast tokenizer")
    vocab = int(config.vocab_size)
    if backend.get_vocab_size(with_added_tokens=True) > vocab:
        raise BadInputError(
            f"target '{column}': the tokenizer of '{source}' has more tokens than its model"
        )
    special, start = special_ids(config, tokenizer, resolved.folder, family, vocab, source)
    positions = next((getattr(config, f) for f in POSITION_FIELDS if getattr(config, f, None)), 0)
    fitted = FittedDecoder(
        source=source,
        folder=str(resolved.folder),
        family=family,
        architecture=json.loads(config.to_json_string(use_diff=False)),
        start_id=start,
        model_vocab=vocab,
    )
    return fitted, backend, special, int(positions or 0)


def model_family(config: Any, source: str) -> Family:
    from transformers.models.auto import modeling_auto as auto

    kind = type(config)
    if getattr(config, "is_encoder_decoder", False):
        if kind in auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING:
            return "seq2seq"
        if kind in auto.MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING:
            return "speech"
    elif kind in auto.MODEL_FOR_CAUSAL_LM_MAPPING:
        model_class = auto.MODEL_FOR_CAUSAL_LM_MAPPING[kind]
        if "encoder_hidden_states" in inspect.signature(model_class.forward).parameters:
            return "causal"
        raise BadInputError(
            f"decoder '{source}': {model_class.__name__} cannot cross-attend to other inputs; "
            "use a GPT-2-style language model or an encoder-decoder (T5, BART, Whisper)"
        )
    raise BadInputError(
        f"decoder '{source}' ({config.model_type}) is neither a causal language model nor an "
        "encoder-decoder with a language-model head"
    )


def special_ids(
    config: Any, tokenizer: Any, folder: Any, family: Family, vocab: int, source: str
) -> tuple[SpecialIds, int]:
    """(pad, BOS, EOS as polymodal uses them, the model's own start token). EOS is the model's;
    BOS its decoder start token (encoder-decoders) or BOS (causal models), else EOS; pad its
    pad token. A BOS or pad equal to EOS, and a missing pad, get ids from `vocab` on."""
    generation = generation_ids(folder)

    def first(*values: Any) -> int | None:
        for value in values:
            if isinstance(value, list | tuple):
                value = value[0] if value else None
            if value is not None:
                return int(value)
        return None

    def setting(name: str) -> Any:
        value = getattr(config, name, None)
        return generation.get(name) if value is None else value

    eos = first(setting("eos_token_id"), tokenizer.eos_token_id)
    bos = first(setting("bos_token_id"), tokenizer.bos_token_id)
    start = first(setting("decoder_start_token_id"), bos) if family != "causal" else bos
    pad = first(setting("pad_token_id"), tokenizer.pad_token_id)
    if eos is None or not 0 <= eos < vocab:
        raise BadInputError(f"decoder '{source}' has no end-of-text token in its vocabulary")
    start = eos if start is None else start
    if not 0 <= start < vocab:
        raise BadInputError(f"decoder '{source}': its start token {start} is not in its vocabulary")
    own = iter(range(vocab, vocab + 2))
    bos_id = start if start != eos else next(own)
    pad_id = pad if pad is not None and pad != eos and 0 <= pad < vocab else next(own)
    return SpecialIds(pad=pad_id, bos=bos_id, eos=eos), start


def generation_ids(folder: Any) -> dict:
    """Token ids that newer sources keep in generation_config.json only."""
    try:
        return json.loads((folder / "generation_config.json").read_text())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Loading says which weights are new (a causal model's cross-attention): expected here."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


# --- building -----------------------------------------------------------------------------------


def auto_class(family: Family) -> Any:
    import transformers

    return {
        "causal": transformers.AutoModelForCausalLM,
        "seq2seq": transformers.AutoModelForSeq2SeqLM,
        "speech": transformers.AutoModelForSpeechSeq2Seq,
    }[family]


def model_config(architecture: dict) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(**architecture)


def build_model(fitted: FittedDecoder, pretrained: bool) -> nn.Module:
    """The model with random weights (a saved model's come from its own file), or with the
    source's (at fit time); an encoder-decoder's encoder is dropped."""
    model_class = auto_class(fitted.family)
    config = model_config(fitted.architecture)
    with quiet_transformers():
        if pretrained:
            model = model_class.from_pretrained(fitted.folder, config=config)
        else:
            model = model_class.from_config(config)
    model = model.float()
    if fitted.family != "causal":
        drop_encoder(model)
    return model


class NoEncoder(nn.Module):
    """Stands where an encoder-decoder's encoder was: polymodal's memory replaces its output."""

    def forward(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("this decoder reads polymodal's fused memory; it has no encoder")


def drop_encoder(model: nn.Module) -> None:
    encoder = model.get_encoder()
    name = next((n for n, module in model.named_modules() if module is encoder), "")
    if not name:
        raise BadInputError(f"cannot find the encoder of {type(model).__name__}")
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent), attribute, NoEncoder())


def new_parameters(fitted: FittedDecoder, model: nn.Module) -> set[str]:
    """Names of the parameters the source does not have: a causal model's cross-attention."""
    if fitted.family != "causal":
        return set()
    plain = model_config({**fitted.architecture, "add_cross_attention": False})
    with torch.device("meta"), quiet_transformers():
        known = auto_class("causal").from_config(plain)
    names = {name for name, _ in known.named_parameters(remove_duplicate=False)}
    return {name for name, _ in model.named_parameters(remove_duplicate=False)} - names


def lora_targets(model: nn.Module, new: set[str]) -> tuple[list[str], bool]:
    """The pretrained attention projections (full module names) and whether they are GPT-2's
    Conv1D layers (peft's fan_in_fan_out)."""
    from transformers.pytorch_utils import Conv1D

    output = model.get_output_embeddings()
    layers = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | Conv1D)
        and module is not output
        and not any(parameter.startswith(f"{name}.") for parameter in new)
    }
    chosen = [name for name in layers if name.rsplit(".", 1)[-1] in LORA_TARGETS] or list(layers)
    if not chosen:
        raise BadInputError("lora: this decoder has no linear layers to adapt; use finetune")
    return chosen, any(isinstance(layers[name], Conv1D) for name in chosen)


def apply_mode(model: nn.Module, mode: DecoderMode, new: set[str], rank: int) -> nn.Module:
    if mode == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        targets, conv1d = lora_targets(model, new)
        config = LoraConfig(
            r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets,
            fan_in_fan_out=conv1d,
        )  # fmt: skip
        model = inject_adapter_in_model(config, model)
    for name, parameter in model.named_parameters():
        trains = mode == "finetune" or name in new or (mode == "lora" and "lora_" in name)
        parameter.requires_grad_(trains)
    return model


def mask_cross_attention(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook on the decoder layers of models whose decoder passes no memory mask to
    cross-attention (Whisper's): sets the one `PretrainedDecoder` left on the layer."""
    mask = getattr(module, "polymodal_memory_mask", None)
    if mask is not None:
        hidden = args[0] if args else kwargs["hidden_states"]
        if getattr(module, "polymodal_eager", False):  # additive, as eager attention adds it
            blocked = torch.finfo(hidden.dtype).min
            mask = torch.zeros(mask.shape, dtype=hidden.dtype, device=mask.device).masked_fill(
                ~mask, blocked
            )
        kwargs["encoder_attention_mask"] = mask[:, None, None, :]
    return args, kwargs


def separate_shared(module: nn.Module, state: dict, prefix: str, metadata: Any) -> None:
    """State-dict hook: tied weights (GPT-2's LM head is its token embedding) as separate
    copies, as safetensors writes them; loading fills the one parameter twice."""
    seen = set()
    for key in [k for k in state if k.startswith(prefix)]:
        tensor = state[key]
        if not isinstance(tensor, Tensor) or tensor.numel() == 0:
            continue
        where = tensor.untyped_storage().data_ptr()
        if where in seen:
            state[key] = tensor.clone()
        seen.add(where)


# --- the decoder --------------------------------------------------------------------------------


class PretrainedDecoder(nn.Module):
    """A Hugging Face decoder over fused memory [B, M, dim], with `TextDecoder`'s interface.

    `settings` gives max_length and the pad/BOS/EOS ids fitted with the tokenizer. Modes (see
    the module docstring): frozen trains only the memory projection and a causal model's new
    cross-attention layers; finetune trains everything; lora trains adapters on the pretrained
    attention projections and what frozen trains.
    """

    def __init__(
        self,
        fitted: FittedDecoder,
        settings: Any,
        dim: int,
        mode: DecoderMode = "finetune",
        lr_scale: float = 0.1,
        lora_rank: int = 8,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.fitted = fitted
        self.family = fitted.family
        self.mode = mode
        self.lr_scale = lr_scale
        self.lora_rank = lora_rank
        self.max_length = int(settings.max_length)
        self.pad_id, self.bos_id, self.eos_id = settings.pad_id, settings.bos_id, settings.eos_id
        self.start_id = fitted.start_id
        self.model_vocab = fitted.model_vocab
        self.vocab_size = max(self.model_vocab, self.pad_id + 1, self.bos_id + 1)
        if self.eos_id in (self.pad_id, self.bos_id) or not 0 <= self.eos_id < self.model_vocab:
            raise ValueError("eos_id must be a token of the model, unlike pad_id and bos_id")
        self.model = self._prepared(build_model(fitted, pretrained=False))
        width = hidden_size(self.model)
        self.project = nn.Linear(dim, width)
        self.dropout = nn.Dropout(dropout)
        self.memory_norm = nn.LayerNorm(width)
        parameters = inspect.signature(self.model.forward).parameters
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"  # v5: cache
        if hasattr(nn.Module, "register_state_dict_post_hook"):
            self.register_state_dict_post_hook(separate_shared)
        else:  # torch before 2.4's public name
            self._register_state_dict_hook(separate_shared)

    def _prepared(self, model: nn.Module) -> nn.Module:
        self.new = new_parameters(self.fitted, model)  # before LoRA renames layers
        model = apply_mode(model, self.mode, self.new, self.lora_rank)
        if self.family == "speech":
            layers = getattr(model.get_decoder(), "layers", None)
            if not layers:
                raise BadInputError(f"decoder '{self.fitted.source}': cannot find its layers")
            eager = getattr(model.config, "_attn_implementation", "eager") == "eager"
            for layer in layers:
                layer.polymodal_eager = eager
                layer.register_forward_pre_hook(mask_cross_attention, with_kwargs=True)
        return model

    # ------------------------------------------------------------ pretrained weights
    @property
    def frozen(self) -> bool:
        return self.mode == "frozen"

    def load_pretrained(self) -> None:
        """Replace the randomly built model by the source's trained one (at fit time)."""
        self.model = self._prepared(build_model(self.fitted, pretrained=True))
        self.train(self.training)

    def learning_rate_scales(self) -> dict[str, float]:
        """Parameter name (relative to this module) → factor on the learning rate: the
        pretrained weights (and LoRA adapters) learn at lr_scale, new layers at 1."""
        return {
            f"model.{name}": self.lr_scale
            for name, _ in self.model.named_parameters(remove_duplicate=False)
            if name not in self.new
        }

    def frozen_state_names(self) -> set[str]:
        """State-dict keys (relative to this module) that never change while training."""
        if self.mode == "finetune":
            return set()
        return {
            f"model.{name}"
            for name, parameter in self.model.named_parameters(remove_duplicate=False)
            if not parameter.requires_grad
        }

    def train(self, mode: bool = True) -> PretrainedDecoder:
        """A frozen model stays in eval mode: its layers behave as when it was trained."""
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    # -------------------------------------------------------------------- decoding
    def _memory(self, memory: Tensor, memory_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Projected memory; masked tokens zeroed, and every token of a row with none unmasked
        (it then reads a constant), so no attention row is empty."""
        mask = memory_mask.to(device=memory.device, dtype=torch.bool)
        memory = memory.to(self.project.weight.dtype).masked_fill(~mask[..., None], 0.0)
        memory = self.memory_norm(self.dropout(self.project(memory)))
        return memory, mask | ~mask.any(dim=-1, keepdim=True)

    def _model_ids(self, tokens: Tensor) -> Tensor:
        """Polymodal's BOS → the model's start token; its pad (after the end) → EOS."""
        ids = torch.where(tokens == self.bos_id, self.start_id, tokens.long())
        return torch.where(ids >= self.model_vocab, self.eos_id, ids)

    def _check_positions(self, first: int, length: int) -> None:
        if first + length > self.max_length + 1:
            raise ValueError(
                f"position {first + length - 1} is past the decoder's max_length "
                f"{self.max_length} (+1 for BOS)"
            )

    def _run(
        self, tokens: Tensor, memory: Tensor, mask: Tensor, past: Any, use_cache: bool
    ) -> tuple[Tensor, Any]:
        ids = self._model_ids(tokens.to(memory.device))
        arguments: dict[str, Any] = {"use_cache": use_cache}
        if past is not None:
            arguments[self._cache_argument] = past
        if self.family == "causal":
            arguments |= {"input_ids": ids, "encoder_hidden_states": memory}
            arguments["encoder_attention_mask"] = mask.long()
        else:
            from transformers.modeling_outputs import BaseModelOutput

            arguments |= {"decoder_input_ids": ids}
            arguments["encoder_outputs"] = BaseModelOutput(last_hidden_state=memory)
            if self.family == "seq2seq":
                arguments["attention_mask"] = mask.long()
        hooked = getattr(self.model.get_decoder(), "layers", []) if self.family == "speech" else []
        for layer in hooked:
            layer.polymodal_memory_mask = mask
        try:
            output = self.model(**arguments)
        finally:
            for layer in hooked:
                layer.polymodal_memory_mask = None
        cache = None
        if use_cache:
            cache = next(
                (output[k] for k in ("cache", "past_key_values") if output.get(k) is not None),
                None,
            )
        return self._with_own_ids(output.logits), cache

    def _with_own_ids(self, logits: Tensor) -> Tensor:
        """Logits over the model's vocabulary and polymodal's own ids (far below the rest)."""
        extra = self.vocab_size - logits.shape[-1]
        if extra <= 0:
            return logits
        low = logits.detach().amin(dim=-1, keepdim=True) - FAR_BELOW
        return torch.cat([logits, low.expand(*logits.shape[:-1], extra)], dim=-1)

    def forward(self, tokens: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """Teacher forcing: tokens [B, T] (BOS first), memory [B, M, dim], memory_mask [B, M]
        (True = real) -> logits [B, T, vocab_size]."""
        self._check_positions(0, tokens.shape[1])
        memory, mask = self._memory(memory, memory_mask)
        logits, _ = self._run(tokens, memory, mask, None, use_cache=False)
        return logits

    def start(self, memory: Tensor, memory_mask: Tensor) -> PretrainedCache:
        memory, mask = self._memory(memory, memory_mask)
        return PretrainedCache(past=None, memory=memory, memory_mask=mask, position=0)

    def step(self, tokens: Tensor, cache: PretrainedCache) -> tuple[Tensor, PretrainedCache]:
        """Feed each row's newest token [B] -> next-token logits [B, vocab] and the grown cache
        (the model's key/value cache is updated in place: use only the returned one)."""
        self._check_positions(cache.position, 1)
        logits, past = self._run(
            tokens[:, None], cache.memory, cache.memory_mask, cache.past, use_cache=True
        )
        grown = PretrainedCache(past, cache.memory, cache.memory_mask, cache.position + 1)
        return logits[:, -1], grown

    def step_without_cache(self, prefix: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """The slow path: prefix [B, t] (BOS first) -> next-token logits [B, vocab]."""
        return self.forward(prefix, memory, memory_mask)[:, -1]

    def reorder(self, cache: PretrainedCache, indices: Tensor) -> PretrainedCache:
        """A cache holding rows `indices` of `cache` (repeats allowed), e.g. surviving beams."""
        indices = indices.to(cache.memory.device)
        return PretrainedCache(
            past=reorder_past(cache.past, indices),
            memory=cache.memory.index_select(0, indices),
            memory_mask=cache.memory_mask.index_select(0, indices),
            position=cache.position,
        )


def reorder_past(past: Any, indices: Tensor) -> Any:
    """Rows `indices` of a transformers cache (reordered in place) or of legacy tuples."""
    if past is None:
        return None
    if hasattr(past, "reorder_cache"):
        past.reorder_cache(indices)
        return past
    if isinstance(past, tuple | list):
        return type(past)(reorder_past(item, indices) for item in past)
    if isinstance(past, Tensor):
        return past.index_select(0, indices.to(past.device))
    raise TypeError(f"cannot reorder a {type(past).__name__} cache")


def positions_limit(positions: int, longest: int) -> int:
    """The most tokens a target may have: `longest` (LONGEST), within the model's positions
    (BOS and every token but the last EOS take one each)."""
    return min(longest, positions - 1) if positions else longest


__all__ = [
    "FittedDecoder",
    "PretrainedCache",
    "PretrainedDecoder",
    "fit_decoder",
    "positions_limit",
]
