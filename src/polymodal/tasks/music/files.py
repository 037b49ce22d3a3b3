"""Generated music as files: MIDI carrying a provenance mark, WAV rendered with FluidSynth.

The mark is a MIDI text event (meta type 0x01) at the start of the first track,
`polymodal:generated {JSON}`, the MIDI counterpart of the PNG text chunk of generated images
(`tasks/image/provenance.py`): which model made the file, from which row, with which
settings. WAV needs the `fluidsynth` program and a General MIDI sound font (Debian:
`fluidsynth`, `fluid-soundfont-gm`; `$POLYMODAL_SOUNDFONT` names another); without them the
MIDI is still written and `render_wav` says in one line what is missing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from polymodal.tasks.files import MARK
from polymodal.tasks.music.tokens import parse_tokens, to_stream

SOUND_FONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")
SAMPLE_RATE = 22050
TEXT_EVENT = 0x01


def midi_bytes(text: str, mark: dict[str, Any] | None = None) -> bytes:
    """Token text → a standard MIDI file (one track of notes), with `mark` as a text event."""
    from music21 import midi
    from music21.midi.translate import streamToMidiFile

    midi_file = streamToMidiFile(to_stream(parse_tokens(text)))
    if mark is not None:
        track = midi_file.tracks[0]
        event = midi.MidiEvent(track, type=midi.MetaEvents.TEXT_EVENT)
        event.data = f"{MARK} {json.dumps(mark, sort_keys=True)}".encode()
        track.events[0:0] = [midi.DeltaTime(track, time=0), event]
    return midi_file.writestr()


def read_mark(path: str | Path) -> dict[str, Any] | None:
    """The mark of a generated MIDI file; None for any other file (or one unreadable)."""
    from music21 import midi

    midi_file = midi.MidiFile()
    try:
        midi_file.readstr(Path(path).read_bytes())
    except Exception:  # not MIDI, truncated: music21 raises several kinds
        return None
    for track in midi_file.tracks:
        for event in track.events:
            data = getattr(event, "data", b"")
            if event.type == midi.MetaEvents.TEXT_EVENT and data.startswith(MARK.encode()):
                try:
                    mark = json.loads(data[len(MARK) + 1 :])
                except (json.JSONDecodeError, UnicodeDecodeError):
                    return None
                return mark if isinstance(mark, dict) else None
    return None


def sound_font() -> Path | None:
    """The General MIDI sound font to render with, if one is installed."""
    chosen = os.environ.get("POLYMODAL_SOUNDFONT")
    for candidate in [chosen] if chosen else SOUND_FONTS:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def rendering_missing() -> str | None:
    """Why WAV cannot be rendered here, in one line; None when it can."""
    if shutil.which("fluidsynth") is None:
        return (
            "no WAV: the fluidsynth program is not installed (Debian: apt-get install fluidsynth)"
        )
    if sound_font() is None:
        return (
            "no WAV: no General MIDI sound font (Debian: apt-get install fluid-soundfont-gm, "
            "or set POLYMODAL_SOUNDFONT)"
        )
    return None


def render_wav(midi: Path, wav: Path) -> None:
    """Render `midi` to `wav` (mono 16-bit at 22.05 kHz) with FluidSynth's fast renderer."""
    missing = rendering_missing()
    if missing:
        raise RuntimeError(missing)
    command = ["fluidsynth", "-ni", "-q", "-g", "0.8", "-r", str(SAMPLE_RATE), "-F", str(wav)]
    command += [str(sound_font()), str(midi)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode or not wav.is_file():
        raise RuntimeError(f"fluidsynth failed on {midi}: {done.stderr.strip()[:200]}")


def wav_data_url(midi: bytes) -> str | None:
    """The MIDI rendered as a `data:audio/wav;base64,` URL (a serving response has no folder);
    None when rendering is not available here."""
    if rendering_missing():
        return None
    with tempfile.TemporaryDirectory() as folder:
        source, sound = Path(folder) / "piece.mid", Path(folder) / "piece.wav"
        source.write_bytes(midi)
        render_wav(source, sound)
        return "data:audio/wav;base64," + base64.b64encode(sound.read_bytes()).decode("ascii")
