"""Figures of a set of melodies, generated or real, computed on their tokens.

- in-key share: notes (rests not counted) whose pitch class belongs to the scale of the piece's
  key, major or natural minor, as music21 spells it (`Key.getScale().getPitches()`); a minor
  piece's raised leading note counts as outside, in the corpus as in generated pieces.
- metre-filling share: bars whose notes and rests follow each other without gap or overlap
  and add up to exactly one bar of the metre (an upbeat, a bar that spills over, or one with a
  hole in it does not fill).
- pitch-class and duration histograms of a whole set, and their distance between two sets as
  total variation (half the L1 distance: 0 same, 1 disjoint), which reads as the share of
  notes that would have to change.
- negative log-likelihood per note: a sequence's summed NLL (nats, over every token and the
  end) divided by its note and rest events, so tokenisations and models compare per note.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache

import numpy as np

from polymodal.tasks.music.tokens import DURATIONS, Piece


@cache
def scale_classes(tonic: str, mode: str) -> frozenset[int]:
    """Pitch classes of the key's scale (major, or natural minor)."""
    from music21 import key

    return frozenset(p.pitchClass for p in key.Key(tonic, mode).getScale().getPitches())


def notes_in_key(
    piece: Piece, tonic: str | None = None, mode: str | None = None
) -> tuple[int, int]:
    """(notes in the key, notes) of a piece; the key is the piece's own unless given."""
    scale = scale_classes(tonic or piece.tonic, mode or piece.mode)
    pitches = [e.pitch for e in piece.events if e.pitch is not None]
    return sum(p % 12 in scale for p in pitches), len(pitches)


def bars_filled(piece: Piece) -> tuple[int, int]:
    """(bars that fill the metre, bars) of a piece: a bar fills when its events follow each
    other without gap or overlap from the bar line to exactly one bar's length later."""
    ends: dict[int, Fraction | None] = dict.fromkeys(range(piece.bars), Fraction(0))
    for event in piece.events:
        end = ends.get(event.bar)
        ends[event.bar] = end + event.duration if end == event.onset else None
    return sum(end == piece.bar_length for end in ends.values()), piece.bars


def share(counts: list[tuple[int, int]]) -> float:
    """Pooled share over pieces: sum of hits / sum of totals (NaN when nothing counted)."""
    hits, total = (sum(column) for column in zip(*counts, strict=True)) if counts else (0, 0)
    return hits / total if total else float("nan")


def pitch_class_histogram(pieces: list[Piece]) -> np.ndarray:
    """Share of the notes of all pieces in each of the 12 pitch classes (C first)."""
    counts = np.zeros(12)
    for piece in pieces:
        for event in piece.events:
            if event.pitch is not None:
                counts[event.pitch % 12] += 1
    return counts / max(counts.sum(), 1)


def duration_histogram(pieces: list[Piece]) -> np.ndarray:
    """Share of the events (notes and rests) of all pieces at each vocabulary duration."""
    index = {duration: i for i, duration in enumerate(DURATIONS)}
    counts = np.zeros(len(DURATIONS))
    for piece in pieces:
        for event in piece.events:
            if event.duration in index:
                counts[index[event.duration]] += 1
    return counts / max(counts.sum(), 1)


def total_variation(first: np.ndarray, second: np.ndarray) -> float:
    return 0.5 * float(np.abs(first - second).sum())


def set_figures(pieces: list[Piece], keys: list[tuple[str, str]] | None = None) -> dict:
    """In-key and metre-filling shares of a set (each piece in its own key, or in `keys`)."""
    keys = keys or [(p.tonic, p.mode) for p in pieces]
    return {
        "in_key_share": share([notes_in_key(p, *k) for p, k in zip(pieces, keys, strict=True)]),
        "metre_fill_share": share([bars_filled(p) for p in pieces]),
        "notes_per_piece": float(np.mean([len(p.events) for p in pieces])) if pieces else 0.0,
    }


def distances(made: list[Piece], real: list[Piece]) -> dict[str, float]:
    """Total-variation distances of the pitch-class and duration histograms of two sets."""
    pitch = total_variation(pitch_class_histogram(made), pitch_class_histogram(real))
    duration = total_variation(duration_histogram(made), duration_histogram(real))
    return {
        "pitch_class_distance": pitch,
        "duration_distance": duration,
        "histogram_distance": (pitch + duration) / 2,
    }


def events_of(pieces: list[Piece]) -> int:
    return sum(len(p.events) for p in pieces)
