"""Text targets: a free-text column (captions, transcripts, answers) written by a decoder that
cross-attends to the fused token memory of every input.

The column gets its own tokenizer (word pieces, or characters for transcripts); training is
teacher forcing with label smoothing; prediction is greedy or beam search with a key/value
cache. Scores are WER and CER (transcripts), BLEU-4, chrF and CIDEr-D (captions) and exact
match; the score that early stopping and comparisons rank by is WER (lower is better).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field, model_validator
from tokenizers import Tokenizer
from torch import nn
from torch.nn import functional as F

from polymodal.config import Strict, TargetConfig
from polymodal.data.column import cell_text, is_missing
from polymodal.data.problems import BadInputError
from polymodal.tasks.base import (
    TargetPrediction,
    TargetState,
    Task,
    nearly_unique,
    register_task,
)
from polymodal.tasks.text.cli import TASK
from polymodal.tasks.text.head import TeacherForced, TextHead
from polymodal.tasks.text.metrics import METRIC_DIRECTIONS, text_metrics, word_error_rate
from polymodal.tasks.text.pretrained import (
    DecoderMode,
    FittedDecoder,
    PretrainedDecoder,
    fit_decoder,
    positions_limit,
)
from polymodal.tasks.text.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SpecialIds,
    TokenizerKind,
    texts_of,
    token_ids,
    train_target_tokenizer,
)

LONGEST = 256  # tokens a text target may have at most


class TextOptions(Strict):
    """A text target's settings (YAML: `targets: [{column: caption, options: {...}}]`)."""

    tokenizer: TokenizerKind = Field(
        "wordpiece", description="wordpiece (captions, answers) or char (transcripts)"
    )
    vocab_size: int = Field(4000, ge=8, description="word-piece vocabulary size at most")
    lowercase: bool = True
    max_length: int | None = Field(
        None, ge=1, le=LONGEST, description="tokens; None: the longest training text + 25%"
    )
    layers: int = Field(2, ge=1, description="decoder layers")
    heads: int = Field(4, ge=1, description="decoder attention heads")
    memory_layers: int = Field(
        1,
        ge=0,
        description="transformer layers over the fused inputs' tokens before the decoder reads "
        "them, so each token sees its neighbours and the other inputs; 0: the decoder reads the "
        "encoders' tokens as they are",
    )
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    beam: int = Field(1, ge=1, description="beam width; 1: greedy")
    length_penalty: float = Field(1.0, description="beam score = log p / length ** this")
    nbest: int = Field(1, ge=1, description="hypotheses kept per row (at most `beam`)")
    generate_length: int | None = Field(
        None, ge=1, description="stop generating after this many tokens (at most max_length)"
    )
    decoder: str | None = Field(
        None,
        description="hf:NAME or a folder: a pretrained decoder (GPT-2 style, T5, BART, Whisper) "
        "with its own tokenizer (tokenizer, vocab_size, lowercase, layers, heads do not apply); "
        "None: polymodal's own",
    )
    decoder_mode: DecoderMode = Field(
        "finetune",
        description="pretrained decoder: frozen (only the memory projection and new "
        "cross-attention layers train), finetune, or lora (peft adapters)",
    )
    decoder_lr_scale: float = Field(
        0.1, gt=0, description="pretrained decoder: its own weights learn at lr × this"
    )
    decoder_lora_rank: int = Field(8, ge=1, description="pretrained decoder, lora: adapter rank")
    ctc_weight: float = Field(
        0.0,
        ge=0,
        description="weight of a CTC loss on each audio or video input's tokens, added to the "
        "decoder's while training (hybrid CTC/attention, as ESPnet trains; 0.3 is its usual "
        "weight); 0: none. Off by default: on the spoken-digit benchmark it did not help",
    )

    @model_validator(mode="after")
    def _nbest_within_beam(self) -> TextOptions:
        if self.nbest > self.beam:
            raise ValueError(f"nbest ({self.nbest}) cannot exceed the beam width ({self.beam})")
        return self


class FittedText(TextOptions):
    max_length: int
    memory_layers: int = 0  # models saved before the memory encoder existed have none
    vocabulary: str  # the tokenizer's own JSON
    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    pretrained: FittedDecoder | None = None  # the pretrained decoder, as fitted

    @property
    def special(self) -> SpecialIds:
        return SpecialIds(self.pad_id, self.bos_id, self.eos_id)


class TextPrediction(TargetPrediction):
    predicted: str
    log_probability: float
    nbest: list[dict[str, Any]] | None = None


DECODING = ("beam", "nbest", "length_penalty", "generate_length")


@register_task
class TextTask(Task):
    name = TASK
    metrics: ClassVar[dict[str, bool]] = METRIC_DIRECTIONS
    score_metric = "wer"
    inference_order = 3  # before multiclass: a column of nearly unique strings is text
    explained = "1 - WER against the transcript written with every input"
    teacher_forced = True
    attributable = False
    writes_text = True
    takes_options = True
    decoding = DECODING
    reads_whole_clips = True

    def __init__(self, state: TargetState) -> None:
        super().__init__(state)
        self.text = FittedText.model_validate(state.options)
        self.tokenizer = Tokenizer.from_str(self.text.vocabulary)

    # ---------------------------------------------------------------- the target
    @classmethod
    def claims(cls, values: list) -> bool:
        return nearly_unique(values)

    @classmethod
    def fit(cls, values: list, config: TargetConfig, table_name: str) -> TargetState:
        try:
            options = TextOptions.model_validate(config.options)
        except ValueError as error:
            raise BadInputError(f"target '{config.column}' options: {error}") from None
        texts = [text for text in (cell_text(v)[0] for v in values) if text is not None]
        own: dict[str, Any] = {}
        limit = LONGEST
        if options.decoder:  # the pretrained decoder's own tokenizer and special ids
            decoder, tokenizer, special, positions = fit_decoder(options.decoder, config.column)
            limit = positions_limit(positions, LONGEST)
            if options.max_length and options.max_length > limit:
                raise BadInputError(
                    f"target '{config.column}': max_length {options.max_length} is more than "
                    f"decoder '{options.decoder}' can take ({limit})"
                )
            own = {"pretrained": decoder.model_dump(), "pad_id": special.pad}
            own |= {"bos_id": special.bos, "eos_id": special.eos}
        else:
            tokenizer = train_target_tokenizer(
                texts, options.tokenizer, options.vocab_size, options.lowercase
            )
        longest = max(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))
        max_length = options.max_length or min(limit, max(8, int(np.ceil(longest * 1.25))))
        fitted = options.model_dump() | {"max_length": max_length, "vocabulary": tokenizer.to_str()}
        fitted |= own
        return TargetState(
            column=config.column, task=cls.name, weight=config.weight, options=fitted
        )

    def encode(self, cells: list) -> tuple[np.ndarray, np.ndarray]:
        """Token ids [rows, max_length + 2] (BOS ... EOS, padded); a missing text is unknown."""
        texts = [None if is_missing(v) else cell_text(v)[0] for v in cells]
        known = np.array([t is not None for t in texts])
        ids = token_ids(
            self.tokenizer, [t or "" for t in texts], self.text.max_length, self.text.special
        )
        return ids, known

    def set_decoding(self, options: dict[str, Any]) -> bool:
        """Beam width, n-best, length penalty and length for later predictions."""
        given = {k: v for k, v in options.items() if v is not None}
        unknown = set(given) - set(self.decoding)
        where = f"{self.name} target '{self.state.column}'"
        if unknown:
            raise BadInputError(f"{where}: unknown {sorted(unknown)}")
        try:
            checked = type(self.text).model_validate(self.text.model_dump() | given)
        except ValueError as error:
            raise BadInputError(f"{where}: {error}") from None
        for key in given:
            setattr(self.text, key, getattr(checked, key))  # the head reads this object
        self.state.options = self.text.model_dump()
        return True

    # ------------------------------------------------------------- the network
    @property
    def outputs(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.text.nbest, 1 + self.text.max_length)

    def head(self, dim: int, branches: int, dropout: float) -> nn.Module:
        decoder = None
        if self.text.pretrained is not None:
            decoder = PretrainedDecoder(
                self.text.pretrained, self.text, dim, mode=self.text.decoder_mode,
                lr_scale=self.text.decoder_lr_scale, lora_rank=self.text.decoder_lora_rank,
                dropout=dropout,
            )  # fmt: skip
        return TextHead(
            self.text, self.outputs, dim, self.text.layers, self.text.heads, dropout, decoder,
            ctc_weight=self.text.ctc_weight, memory_layers=self.text.memory_layers,
        )  # fmt: skip

    def loss(
        self, outputs: torch.Tensor, target: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        """Label-smoothed cross-entropy per token, averaged over the real tokens of rows with
        a known text (teacher forcing: `outputs` are the logits for target[:, 1:]), plus
        `ctc_weight` × the head's CTC loss when it scored one."""
        if isinstance(outputs, TeacherForced):
            return self.loss(outputs.logits, target, known) + self.text.ctc_weight * outputs.ctc
        pad = self.text.pad_id
        labels = target[:, 1:].long().masked_fill(~known.bool()[:, None], pad)
        total = F.cross_entropy(
            outputs.float().flatten(0, 1),
            labels.flatten(),
            ignore_index=pad,
            label_smoothing=self.text.label_smoothing,
            reduction="sum",
        )
        return total / (labels != pad).sum().clamp(min=1)

    # --------------------------------------------------------------- decoding
    def decode(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """[rows, nbest, 1 + max_length] → texts and log-probabilities, best first."""
        rows, nbest = outputs.shape[:2]
        ids = outputs[..., 1:].reshape(rows * nbest, outputs.shape[2] - 1)
        texts = texts_of(self.tokenizer, ids, self.text.special)
        texts = np.asarray(texts, dtype=object).reshape(rows, nbest)
        scores = outputs[..., 0].astype(np.float64)
        return {
            "text": texts[:, 0],
            "log_probability": scores[:, 0],
            "nbest_text": texts,
            "nbest_log_probability": scores,
        }

    def combine(self, decoded: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Per row, the text of the model most sure of its own (highest log-probability)."""
        scores = np.stack([d["log_probability"] for d in decoded])
        best = scores.argmax(axis=0)
        rows = np.arange(scores.shape[1])
        return {
            key: np.stack([d[key] for d in decoded])[best, rows]
            for key in ("text", "log_probability", "nbest_text", "nbest_log_probability")
        }

    def columns(self, decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        column = self.state.column
        out = {
            f"{column}_predicted": decoded["text"],
            f"{column}_log_probability": decoded["log_probability"],
        }
        if decoded["nbest_text"].shape[1] > 1:
            out[f"{column}_nbest"] = np.array(
                [json.dumps(hypotheses(decoded, row)) for row in range(len(decoded["text"]))],
                dtype=object,
            )
        return out

    def prediction(self, decoded: dict[str, np.ndarray], row: int) -> TextPrediction:
        several = decoded["nbest_text"].shape[1] > 1
        return TextPrediction(
            predicted=str(decoded["text"][row]),
            log_probability=float(decoded["log_probability"][row]),
            nbest=hypotheses(decoded, row) if several else None,
        )

    # ---------------------------------------------------------------- scoring
    def evaluate(self, true: np.ndarray, known: np.ndarray, decoded: dict) -> dict:
        if not known.any():
            return {"rows": 0}
        references = texts_of(self.tokenizer, true[known], self.text.special)
        predicted = [str(t) for t in decoded["text"][known]]
        examples = [
            {"reference": r, "predicted": p}
            for r, p in zip(references[:5], predicted[:5], strict=True)
        ]
        return (
            {"rows": len(references)} | text_metrics(references, predicted) | {"examples": examples}
        )

    # ------------------------------------------------------------ explanation
    def reference(self, decoded: dict[str, np.ndarray]) -> tuple[np.ndarray, list]:
        texts = np.asarray(decoded["text"], dtype=object)
        return texts, [str(t) for t in texts]

    def explained_value(self, decoded: dict[str, np.ndarray], reference: np.ndarray) -> np.ndarray:
        """1 - WER of each row's text against the text written with every input: how much of
        that transcript a coalition of inputs recovers."""
        return np.array(
            [
                1.0 - word_error_rate([str(ref)], [str(hyp)]) if str(ref).strip() else 1.0
                for ref, hyp in zip(reference, decoded["text"], strict=True)
            ]
        )


def hypotheses(decoded: dict[str, np.ndarray], row: int) -> list[dict[str, Any]]:
    return [
        {"text": str(text), "log_probability": float(score)}
        for text, score in zip(
            decoded["nbest_text"][row], decoded["nbest_log_probability"][row], strict=True
        )
    ]
