"""Music targets: a column of music files (MIDI, MusicXML, ABC, Humdrum) whose melodies are
written by the text target's decoder, cross-attending to the fused memory of every input
(key, mode, metre, collection as categories; anything else the table has).

Each file becomes token text over a fixed vocabulary (`tokens.py`); training and the decoder
are the text task's; prediction samples (temperature, top-k, a seed per row, optionally
continuing a given opening bar), writes one MIDI file per row with a provenance text event,
and renders it to WAV with FluidSynth when it is installed (`files.py`). Early stopping ranks
epochs by the validation NLL per note; `evaluate` reports in-key and metre-filling shares and
histogram distances (`metrics.py`).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from polymodal.config import Strict, TargetConfig
from polymodal.data.column import is_missing
from polymodal.data.problems import BadInputError
from polymodal.fusion.base import Fused
from polymodal.tasks.base import (
    TargetPrediction,
    TargetState,
    paths_ending,
    register_task,
    target_options,
)
from polymodal.tasks.files import safe_stem, write_new
from polymodal.tasks.music import metrics
from polymodal.tasks.music.files import (
    midi_bytes,
    read_mark,
    render_wav,
    rendering_missing,
    wav_data_url,
)
from polymodal.tasks.music.tokens import (
    MUSIC_EXTENSIONS,
    REST,
    MusicError,
    music_tokenizer,
    parse_tokens,
    read_music,
)
from polymodal.tasks.text.head import TextHead
from polymodal.tasks.text.search import greedy, sampler
from polymodal.tasks.text.task import TextTask
from polymodal.tasks.text.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SpecialIds,
    texts_of,
    token_ids,
)

LONGEST = 1024  # tokens a piece may have at most
DECODING = ("temperature", "top_k", "seed", "generate_length", "music_dir", "relative_to")
DECODING += ("opening",)


class MusicOptions(Strict):
    """A music target's settings (YAML: `targets: [{column: tune, options: {...}}]`); the
    sampling ones can be changed at prediction time (`set_decoding`)."""

    max_bars: int = Field(16, ge=1, description="bars of each piece learned (its first ones)")
    layers: int = Field(2, ge=1, description="decoder layers")
    heads: int = Field(4, ge=1, description="decoder attention heads")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    temperature: float = Field(1.0, ge=0, description="sampling temperature; 0: greedy")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens; 0: all")
    seed: int = Field(0, ge=0, description="sampling seed (each row's: seed and row number)")
    generate_length: int | None = Field(None, ge=1, description="stop after this many tokens")
    music_dir: str | None = Field(None, description="predict: folder for the MIDI/WAV files")
    relative_to: str | None = Field(
        None, description="predict: paths are written relative to this folder; None: as is"
    )
    opening: str | None = Field(
        None, description="a music file whose key, metre and first bar open every piece"
    )


class FittedMusic(MusicOptions):
    """What the text head reads (`Decoding`): sampling is one hypothesis, no beam."""

    max_length: int
    beam: int = 1
    nbest: int = 1
    length_penalty: float = 1.0
    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID

    @property
    def special(self) -> SpecialIds:
        return SpecialIds(self.pad_id, self.bos_id, self.eos_id)


class MusicPrediction(TargetPrediction):
    predicted: str  # the tokens
    log_probability: float
    audio: str | None = None  # data:audio/wav;base64,... when FluidSynth is installed


def require_music21() -> None:
    """music21 is an extra: say how to get it rather than fail on an import deep inside."""
    if importlib.util.find_spec("music21") is None:
        raise BadInputError("music targets need music21: pip install 'polymodal[music]'")


@lru_cache(maxsize=65536)
def _read(path: str, stamp: tuple[int, int], max_bars: int) -> str:
    return read_music(path, max_bars)


def music_text(path: str, max_bars: int) -> str:
    """A file's token text, read once per process while the file is unchanged."""
    found = Path(path).stat()
    return _read(path, (found.st_mtime_ns, found.st_size), max_bars)


def read_cells(cells: list, column: str, max_bars: int) -> list[str | None]:
    """Each cell's token text; a missing cell is None, an unreadable file too, with a
    one-line warning naming row, column and file (training goes on without it)."""
    texts: list[str | None] = []
    for row, cell in enumerate(cells):
        text = None
        if not is_missing(cell):
            try:
                text = music_text(str(cell), max_bars)
            except (OSError, MusicError) as error:
                reason = error.strerror if isinstance(error, OSError) else str(error)
                warnings.warn(
                    f"row {row}, column '{column}', file {cell}: skipped ({reason})", stacklevel=2
                )
        texts.append(text)
    return texts


class MusicHead(TextHead):
    """The text head, sampling: Gumbel noise drawn per row from (seed, row number), so a row's
    piece is the same in any batch or chunk; `opening` gives the tokens every piece starts
    with (after BOS)."""

    def __init__(self, settings: FittedMusic, opening: Any, *args: Any) -> None:
        super().__init__(settings, *args)
        self.opening = opening
        self.next_row = 0  # the number of the next row sampled (Task.number_rows sets it)

    def forward(self, fused: Fused, target: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing over the batch's longest piece only, the logits padded back to the
        fitted length (pieces differ in length several times over: a batch padded to the
        longest of the corpus spends most of its time on padding)."""
        if target is None:
            return super().forward(fused)
        real = (target != self.settings.pad_id).any(dim=0).nonzero()
        used = int(real.max()) + 1 if len(real) else 2
        logits = super().forward(fused, target[:, :used])
        return F.pad(logits, (0, 0, 0, target.shape[1] - 1 - logits.shape[1]))

    def search(
        self, memory: torch.Tensor, memory_mask: torch.Tensor, length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        settings, batch = self.settings, memory.shape[0]
        if settings.temperature == 0 and not settings.opening:
            return super().search(memory, memory_mask, length)
        rows = range(self.next_row, self.next_row + batch)
        self.next_row += batch
        vocab = self.decoder.vocab_size
        noise = torch.from_numpy(
            np.stack([np.random.default_rng([settings.seed, row]).gumbel(size=(length, vocab))
                      for row in rows]).astype(np.float32)
        )  # fmt: skip
        if settings.temperature == 0:
            noise.zero_()
        forced = self.opening()
        forced = None if forced is None else forced[None, :length].expand(batch, -1)
        choose = sampler(noise, settings.temperature, settings.top_k, forced, settings.pad_id)
        ids, scores = greedy(self.decoder, memory, memory_mask, max_length=length, choose=choose)
        return ids[:, None], scores[:, None]


@register_task
class MusicTask(TextTask):
    name = "music"
    metrics: ClassVar[dict[str, bool]] = {
        "in_key_share": True,
        "metre_fill_share": True,
        "pitch_class_distance": False,
        "duration_distance": False,
        "histogram_distance": False,
    }
    score_metric = "histogram_distance"
    inference_order = 2  # a column of music files as the target is music to write
    explained = "1 - token error rate against the piece written with every input"
    writes_text = False
    reads_files = True
    scored_by_loss = True
    decoding = DECODING
    # The media type of `prediction`'s `audio` data: URL (for `POST /v1/generate`).
    generates = "audio/wav"

    def __init__(self, state: TargetState) -> None:  # not TextTask's: no tokenizer to load
        require_music21()
        self.state = state
        self.origin: dict[str, Any] = {}
        self.text = FittedMusic.model_validate(state.options)
        self.tokenizer = music_tokenizer()
        self._head: MusicHead | None = None
        self.first_row = 0

    # ---------------------------------------------------------------- the target
    @classmethod
    def count_generated(cls, paths: Sequence[str]) -> int:
        """MIDI files carrying the `polymodal:generated` text event (`polymodal inspect`);
        other files are never opened."""
        midi = [p for p in paths if p.lower().endswith((".mid", ".midi"))]
        return sum(read_mark(path) is not None for path in midi)

    @classmethod
    def claims(cls, values: list) -> bool:
        return paths_ending(values, MUSIC_EXTENSIONS)

    @classmethod
    def fit(cls, values: list, config: TargetConfig, table_name: str) -> TargetState:
        """The longest training piece sets how many tokens the decoder takes."""
        require_music21()
        options = target_options(MusicOptions, config, table_name, cls.name)
        texts = [t for t in read_cells(values, config.column, options.max_bars) if t]
        if not texts:
            raise BadInputError(
                f"{table_name}: music target '{config.column}': no readable music file"
            )
        longest = max(len(text.split()) for text in texts)
        max_length = min(LONGEST, max(8, math.ceil(longest * 1.1)))
        fitted = options.model_dump() | {"max_length": max_length}
        return TargetState(
            column=config.column, task=cls.name, weight=config.weight, options=fitted
        )

    def encode(self, cells: list) -> tuple[np.ndarray, np.ndarray]:
        """Token ids [rows, max_length + 2] (BOS ... EOS, padded); a missing or unreadable
        file is unknown (adds no loss)."""
        texts = read_cells(cells, self.state.column, self.text.max_bars)
        known = np.array([t is not None for t in texts], dtype=bool)
        ids = token_ids(
            self.tokenizer, [t or "" for t in texts], self.text.max_length, self.text.special
        )
        return ids, known

    def set_decoding(self, options: dict[str, Any]) -> bool:
        """Sampling settings, where files go and the opening, for later predictions."""
        super().set_decoding(options)
        if self.text.opening:
            self.opening_ids()  # an unreadable opening fails now, in one line
        return True

    def number_rows(self, first: int) -> None:
        self.first_row = first
        if self._head is not None:
            self._head.next_row = first

    def opening_ids(self) -> torch.Tensor | None:
        """The opening's tokens: its key, metre and first bar (None: no opening)."""
        if not self.text.opening:
            return None
        try:
            tokens = music_text(self.text.opening, 1).split()
        except (OSError, MusicError) as error:
            raise BadInputError(f"opening {self.text.opening}: {error}") from None
        return torch.tensor(self.tokenizer.encode(tokens, is_pretokenized=True).ids)

    # ------------------------------------------------------------- the network
    def head(self, dim: int, branches: int, dropout: float) -> nn.Module:
        self._head = MusicHead(
            self.text, self.opening_ids, self.outputs, dim, self.text.layers, self.text.heads,
            dropout,
        )  # fmt: skip
        return self._head

    def validation_score(self, outputs: np.ndarray, true: np.ndarray, known: np.ndarray) -> float:
        """Minus the validation NLL per note (teacher-forced logits)."""
        if not known.any():
            return float("nan")
        return -self.nll_per_note(outputs[known], true[known])

    def nll_per_note(self, logits: np.ndarray, ids: np.ndarray) -> float:
        """Summed NLL (nats) of every token after BOS, the end included, per note or rest."""
        nats, events = self.nll(logits, ids)
        return nats / max(events, 1)

    def nll(self, logits: np.ndarray, ids: np.ndarray, given: int = 0) -> tuple[float, int]:
        """(summed NLL in nats, note and rest events) of pieces `ids` [rows, max_length + 2]
        under teacher-forced `logits` [rows, max_length + 1, vocab]; the first `given` tokens
        after BOS (a header the caller treats as known) are not counted."""
        labels = torch.as_tensor(ids[:, 1:], dtype=torch.long)
        log_probs = torch.log_softmax(torch.as_tensor(logits, dtype=torch.float32), dim=-1)
        picked = log_probs.gather(-1, labels[..., None])[..., 0]
        counted = (labels != self.text.pad_id) & (torch.arange(labels.shape[1]) >= given)
        return float(-picked[counted].sum()), int(np.isin(ids, self.event_ids()).sum())

    def event_ids(self) -> list[int]:
        """Ids of the tokens that start an event (a note or a rest)."""
        return [i for t, i in self.tokenizer.get_vocab().items() if t.startswith("Pitch_")] + [
            self.tokenizer.token_to_id(REST)
        ]

    # --------------------------------------------------------------- decoding
    def mark(self, row: int) -> dict[str, Any]:
        """The provenance mark of row `row`'s piece."""
        settings = {key: getattr(self.text, key) for key in ("seed", "temperature", "top_k")}
        return {"generated": True, **self.origin, "column": self.state.column, "row": row} | (
            settings
        )

    def columns(self, decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One MIDI file per row in `music_dir` (and its WAV where FluidSynth is installed);
        the columns hold their paths and the piece's log-probability."""
        texts, column = decoded["text"], self.state.column
        if len(texts) and not self.text.music_dir:
            raise BadInputError(
                f"music target '{column}': say where the generated MIDI files go: "
                "Model.set_decoding(music_dir=...) (CLI: --music-dir)"
            )
        missing = rendering_missing()
        if missing and len(texts):
            warnings.warn(f"music target '{column}': {missing}", stacklevel=2)
        first = self.first_row
        midis, wavs = np.empty(len(texts), object), np.full(len(texts), "", dtype=object)
        for index, text in enumerate(texts):
            stem = f"{safe_stem(column, 'music')}-{first + index:06d}"
            data = midi_bytes(str(text), self.mark(first + index))
            midi = write_new(Path(self.text.music_dir or "."), stem, data, ".mid")
            midis[index] = self.shown(midi)
            if not missing:
                wav = write_new(midi.parent, midi.stem, b"", ".wav")
                render_wav(midi, wav)
                wavs[index] = self.shown(wav)
        return {
            f"{column}_predicted": midis,
            f"{column}_wav": wavs,
            f"{column}_log_probability": decoded["log_probability"],
        }

    def shown(self, path: Path) -> str:
        """A written file's path as the prediction table gives it."""
        return str(path.relative_to(self.text.relative_to)) if self.text.relative_to else str(path)

    def prediction(self, decoded: dict[str, np.ndarray], row: int) -> MusicPrediction:
        text = str(decoded["text"][row])
        return MusicPrediction(
            predicted=text,
            log_probability=float(decoded["log_probability"][row]),
            audio=wav_data_url(midi_bytes(text, self.mark(row))),
        )

    # ---------------------------------------------------------------- scoring
    def evaluate(self, true: np.ndarray, known: np.ndarray, decoded: dict) -> dict:
        """Generated pieces against the rows' real ones: shares of each set (the generated in
        the real piece's key) and the distances between their histograms."""
        if not known.any():
            return {"rows": 0}
        real = [parse_tokens(t) for t in texts_of(self.tokenizer, true[known], self.text.special)]
        made = [parse_tokens(str(t)) for t in decoded["text"][known]]
        keys = [(piece.tonic, piece.mode) for piece in real]
        figures = metrics.set_figures(made, keys)
        real_figures = {f"{k}_real": v for k, v in metrics.set_figures(real).items()}
        return {"rows": len(real)} | figures | real_figures | metrics.distances(made, real)
