"""A melody as tokens: an ABC-like event list over a fixed vocabulary.

A piece is `Key_<tonic>_<mode> TimeSig_<n>/<d>` then, per bar, `Bar` followed by one
`Pitch_<midi>` or `Rest` token and one `Dur_<quarters>` token per event. ABC-like (events
with durations, explicit bar lines) rather than REMI-like (Position tokens within a bar):
a melody is one voice, so an event's onset is the sum of the durations before it and REMI's
positions would only lengthen the sequence by half; and with no positions to lean on, whether
a bar's durations fill the metre is something the model has to learn, which the metre-filling
share then measures. One voice only (the first part; the highest note of a chord): a melody
model trains in minutes on a CPU, four-part harmony would not.

The vocabulary is fixed (no fitting), so every model reads every piece the same way; ids 0-3
are the text decoder's PAD, BOS, EOS, UNK.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import NamedTuple

from tokenizers import Tokenizer, models, pre_tokenizers

from polymodal.tasks.text.tokenizer import SPECIALS, UNK

BAR, REST = "Bar", "Rest"
TONICS = ("C", "C#", "D", "E-", "E", "F", "F#", "G", "A-", "A", "B-", "B")  # by pitch class
MODES = ("major", "minor")
NUMERATORS, DENOMINATORS = range(1, 13), (1, 2, 4, 8, 16)
LOWEST, HIGHEST = 21, 108  # the piano's MIDI range
# Quarter-note lengths a note is rounded to: straight and dotted values and triplets.
DURATIONS = tuple(
    Fraction(text)
    for text in "1/8 1/6 1/4 1/3 3/8 1/2 2/3 3/4 1 5/4 4/3 3/2 7/4 2 5/2 3 7/2 4 5 6 8".split()
)
MUSIC_EXTENSIONS = (".mid", ".midi", ".mxl", ".xml", ".musicxml", ".abc", ".krn")


class Event(NamedTuple):
    """One note (`pitch` a MIDI number) or rest (`pitch` None) in bar `bar` (0 = first)."""

    pitch: int | None
    duration: Fraction
    bar: int


class Piece(NamedTuple):
    """A token sequence read back: its key, metre and events."""

    tonic: str
    mode: str
    metre: tuple[int, int]
    events: list[Event]
    bars: int

    @property
    def bar_length(self) -> Fraction:
        """A full bar in quarter notes (3/8: 3/2)."""
        return Fraction(4 * self.metre[0], self.metre[1])


def key_token(tonic: str, mode: str) -> str:
    return f"Key_{tonic}_{mode}"


def metre_token(numerator: int, denominator: int) -> str:
    return f"TimeSig_{numerator}/{denominator}"


def duration_token(duration: Fraction) -> str:
    return f"Dur_{duration}"


@cache
def vocabulary() -> tuple[str, ...]:
    """Every token, in a fixed order (the ids)."""
    keys = [key_token(tonic, mode) for mode in MODES for tonic in TONICS]
    metres = [metre_token(n, d) for d in DENOMINATORS for n in NUMERATORS]
    pitches = [f"Pitch_{p}" for p in range(LOWEST, HIGHEST + 1)]
    durations = [duration_token(d) for d in DURATIONS]
    return (*SPECIALS, BAR, REST, *keys, *metres, *pitches, *durations)


def music_tokenizer() -> Tokenizer:
    """The fixed vocabulary as a `tokenizers` word-level tokenizer over space-separated tokens,
    so the text task's encoding and decoding read music text as they read any text."""
    ids = {token: index for index, token in enumerate(vocabulary())}
    tokenizer = Tokenizer(models.WordLevel(ids, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


def nearest_duration(quarters: float) -> Fraction:
    """The vocabulary's duration closest to `quarters` (longer ones become 8 quarters)."""
    return min(DURATIONS, key=lambda d: abs(float(d) - quarters))


def tonic_name(pitch_class: int) -> str:
    return TONICS[pitch_class % 12]


# ------------------------------------------------------------------- reading files
class MusicError(ValueError):
    """A music file that cannot be read as a melody (the message says why)."""


def read_music(path: str | Path, max_bars: int) -> str:
    """A music file's melody (its first part) as token text, at most `max_bars` bars."""
    from music21 import converter

    try:
        score = converter.parse(str(path))
    except Exception as error:  # music21 raises many kinds for a bad file
        raise MusicError(f"music21 cannot read it ({type(error).__name__}: {error})") from None
    return " ".join(score_tokens(score, max_bars))


def score_tokens(score: object, max_bars: int) -> list[str]:
    """A music21 score (or part) → tokens of its first part's melody."""
    from music21 import meter, stream

    parts = getattr(score, "parts", None)
    part = parts[0] if parts else score
    if not part.getElementsByClass(stream.Measure):
        part = part.makeMeasures()
    measures = list(part.getElementsByClass(stream.Measure))[:max_bars]
    if not measures or not part.recurse().notes:
        raise MusicError("no notes")
    signatures = part.recurse().getElementsByClass(meter.TimeSignature)
    metre = (signatures[0].numerator, signatures[0].denominator) if signatures else (4, 4)
    if metre[0] not in NUMERATORS or metre[1] not in DENOMINATORS:
        raise MusicError(f"metre {metre[0]}/{metre[1]} is outside the vocabulary")
    found = piece_key(part)
    tokens = [key_token(tonic_name(found.tonic.pitchClass), found.mode), metre_token(*metre)]
    for measure in measures:
        tokens.append(BAR)
        tokens += measure_tokens(measure)
    return tokens


def piece_key(part: object) -> object:
    """The piece's key: of music21's Krumhansl-Schmuckler interpretations, major or minor,
    the most likely one that agrees with the key signature when there is one (a short tune
    leaves the analysis torn between neighbouring keys; the signature is what the composer
    wrote)."""
    from music21 import key

    analysed = part.analyze("key")
    candidates = [k for k in [analysed, *analysed.alternateInterpretations] if k.mode in MODES]
    signatures = part.recurse().getElementsByClass(key.KeySignature)
    agreeing = [k for k in candidates if signatures and k.sharps == signatures[0].sharps]
    return (agreeing or candidates or [key.Key("C")])[0]


def measure_tokens(measure: object) -> list[str]:
    """One bar's events, one voice: notes in onset order, a chord as its highest note, a note
    that starts while the previous one sounds skipped, a gap filled by a rest."""
    tokens, time = [], 0.0
    for element in sorted(measure.flatten().notesAndRests, key=lambda e: e.offset):
        length = float(element.quarterLength)
        if length <= 0 or element.offset < time - 1e-6:
            continue  # grace notes, overlapping voices
        if element.offset > time + 1e-6:
            tokens += [REST, duration_token(nearest_duration(element.offset - time))]
        pitches = [p.midi for p in getattr(element, "pitches", ())]
        pitch = min(max(max(pitches), LOWEST), HIGHEST) if pitches else None
        tokens += [f"Pitch_{pitch}" if pitch is not None else REST]
        tokens.append(duration_token(nearest_duration(length)))
        time = element.offset + length
    return tokens


# -------------------------------------------------------------- reading tokens back
def parse_tokens(text: str) -> Piece:
    """Token text → key, metre and events; tokens out of place (a duration without a note,
    a second key) are skipped, so any generated sequence reads as some piece."""
    tonic, mode, metre = "C", "major", (4, 4)
    events: list[Event] = []
    bar, pitch, pending = -1, None, False
    for token in text.split():
        kind, _, value = token.partition("_")
        if kind == "Key" and bar < 0:
            tonic, mode = value.rsplit("_", 1)
        elif kind == "TimeSig" and bar < 0:
            numerator, denominator = value.split("/")
            metre = (int(numerator), int(denominator))
        elif token == BAR:
            bar, pending = bar + 1, False
        elif token == REST or kind == "Pitch":
            pitch, pending = (None if token == REST else int(value)), True
        elif kind == "Dur" and pending:
            events.append(Event(pitch, Fraction(value), max(bar, 0)))
            pending = False
    return Piece(tonic, mode, metre, events, max(bar + 1, 0))


def to_stream(piece: Piece) -> object:
    """A music21 part of the piece (key, metre, notes and rests in order), for MIDI. A short
    first bar (an upbeat) starts with a rest that fills it: MIDI has no anacrusis, and the
    bar lines of a file read back must fall where the tokens put them."""
    from music21 import key, meter, note, stream, tempo

    part = stream.Part()
    part.append(tempo.MetronomeMark(number=96))
    part.append(meter.TimeSignature(f"{piece.metre[0]}/{piece.metre[1]}"))
    part.append(key.Key(piece.tonic, piece.mode))
    upbeat = piece.bar_length - sum(e.duration for e in piece.events if e.bar == 0)
    if piece.events and 0 < upbeat < piece.bar_length:
        part.append(note.Rest(quarterLength=upbeat))
    for event in piece.events:
        made = note.Rest() if event.pitch is None else note.Note(midi=event.pitch)
        made.quarterLength = event.duration
        part.append(made)
    return part
