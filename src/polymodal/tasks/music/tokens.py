"""A melody as tokens: a REMI-like event list over a fixed vocabulary.

A piece is `Key_<tonic>_<mode> TimeSig_<n>/<d>` then, per bar, `Bar` followed by three tokens
per event: `Pos_<onset>` (quarter notes from the bar line, on a grid of twelfths), `Pitch_<midi>`
or `Rest`, and `Dur_<quarters>`. REMI-like (Huang and Yang 2020: Bar, Position, Pitch,
Duration), with rests kept as events so that a bar's events can be seen to fill it or not.
Chosen over an ABC-like list (pitches and durations only, an onset implied by the durations
before it) after training both the same way on the music21 corpus (BENCHMARKS.md): 76% of the
REMI-like model's bars filled the metre (the corpus: 81%) against 22% of the ABC-like
model's, and its held-out NLL per note was lower (2.66 against 3.30). Without positions, where
a bar ends is a sum over every duration since the last bar line; with them it is one step:
the next onset is this onset plus this duration.

One voice only (the first part; the highest note of a chord; a note that starts while the
previous one sounds is skipped): a melody model trains in minutes on a CPU, four-part harmony
would not. The vocabulary is fixed (no fitting), so every model reads every piece the same
way; ids 0-3 are the text decoder's PAD, BOS, EOS, UNK.
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
GRID, LONGEST_BAR = 12, 16  # onsets in twelfths of a quarter note; bars of 16 quarters at most
MUSIC_EXTENSIONS = (".mid", ".midi", ".mxl", ".xml", ".musicxml", ".abc", ".krn")


class Event(NamedTuple):
    """One note (`pitch` a MIDI number) or rest (`pitch` None) in bar `bar` (0 = first), at
    `onset` quarter notes from its bar line."""

    pitch: int | None
    duration: Fraction
    bar: int
    onset: Fraction


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


def position_token(onset: Fraction) -> str:
    return f"Pos_{onset}"


@cache
def vocabulary() -> tuple[str, ...]:
    """Every token, in a fixed order (the ids)."""
    keys = [key_token(tonic, mode) for mode in MODES for tonic in TONICS]
    metres = [metre_token(n, d) for d in DENOMINATORS for n in NUMERATORS if 4 * n <= 16 * d]
    positions = [position_token(Fraction(k, GRID)) for k in range(LONGEST_BAR * GRID)]
    pitches = [f"Pitch_{p}" for p in range(LOWEST, HIGHEST + 1)]
    durations = [duration_token(d) for d in DURATIONS]
    return (*SPECIALS, BAR, REST, *keys, *metres, *positions, *pitches, *durations)


def music_tokenizer() -> Tokenizer:
    """The fixed vocabulary as a `tokenizers` word-level tokenizer over space-separated tokens,
    so the text task's encoding and decoding read music text as they read any text."""
    ids = {token: index for index, token in enumerate(vocabulary())}
    tokenizer = Tokenizer(models.WordLevel(ids, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


def nearest_position(quarters: float) -> Fraction:
    """The grid's onset nearest `quarters` (within a bar)."""
    return Fraction(min(round(quarters * GRID), LONGEST_BAR * GRID - 1), GRID)


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
    if metre_token(*metre) not in vocabulary():
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
    """One bar's events, one voice: notes and rests in onset order, a chord as its highest
    note, a note that starts while the previous one sounds skipped, a gap filled by a rest."""
    tokens, time = [], 0.0
    for element in sorted(measure.flatten().notesAndRests, key=lambda e: e.offset):
        length = float(element.quarterLength)
        if length <= 0 or element.offset < time - 1e-6:
            continue  # grace notes, overlapping voices
        if element.offset > time + 1e-6:
            gap = nearest_duration(element.offset - time)
            tokens += [position_token(nearest_position(time)), REST, duration_token(gap)]
        pitches = [p.midi for p in getattr(element, "pitches", ())]
        pitch = min(max(max(pitches), LOWEST), HIGHEST) if pitches else None
        tokens.append(position_token(nearest_position(element.offset)))
        tokens.append(f"Pitch_{pitch}" if pitch is not None else REST)
        tokens.append(duration_token(nearest_duration(length)))
        time = element.offset + length
    return tokens


# -------------------------------------------------------------- reading tokens back
def parse_tokens(text: str) -> Piece:
    """Token text → key, metre and events; tokens out of place (a duration without a note,
    a second key) are skipped, so any generated sequence reads as some piece. An event
    without a position starts where the one before it ended."""
    tonic, mode, metre = "C", "major", (4, 4)
    events: list[Event] = []
    bar, pitch, pending, onset, time = -1, None, False, None, Fraction(0)
    for token in text.split():
        kind, _, value = token.partition("_")
        if kind == "Key" and bar < 0:
            tonic, mode = value.rsplit("_", 1)
        elif kind == "TimeSig" and bar < 0:
            numerator, denominator = value.split("/")
            metre = (int(numerator), int(denominator))
        elif token == BAR:
            bar, pending, onset, time = bar + 1, False, None, Fraction(0)
        elif kind == "Pos":
            onset = Fraction(value)
        elif token == REST or kind == "Pitch":
            pitch, pending = (None if token == REST else int(value)), True
        elif kind == "Dur" and pending:
            start = time if onset is None else onset
            events.append(Event(pitch, Fraction(value), max(bar, 0), start))
            pending, onset, time = False, None, start + Fraction(value)
    return Piece(tonic, mode, metre, events, max(bar + 1, 0))


def to_stream(piece: Piece) -> object:
    """A music21 part of the piece (key, metre, each event at its bar and onset), for MIDI.
    Bars are a bar's length apart; a short first bar (an upbeat) is moved to end at the
    second bar line: MIDI has no anacrusis, and the bar lines of a file read back must fall
    where the tokens put them."""
    from music21 import key, meter, note, stream, tempo

    part = stream.Part()
    part.insert(0, tempo.MetronomeMark(number=96))
    part.insert(0, meter.TimeSignature(f"{piece.metre[0]}/{piece.metre[1]}"))
    part.insert(0, key.Key(piece.tonic, piece.mode))
    first = [e.onset + e.duration for e in piece.events if e.bar == 0]
    upbeat = max(piece.bar_length - max(first), Fraction(0)) if first else Fraction(0)
    for event in piece.events:
        made = note.Rest() if event.pitch is None else note.Note(midi=event.pitch)
        made.quarterLength = event.duration
        shift = upbeat if event.bar == 0 else 0
        part.insert(event.bar * piece.bar_length + event.onset + shift, made)
    return part
