"""Small media files made by the tests themselves: PNG, WAV and MP4 (through PyAV)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pandas as pd
import soundfile
from PIL import Image

from polymodal.config import Config, TargetConfig
from polymodal.demo import draw_shape, tone


def write_png(path: Path, shape: str = "circle", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_shape(shape, "red", np.random.default_rng(seed)).save(path)
    return path


def write_wav(path: Path, pitch: float = 440.0, seed: int = 0, rate: int = 8000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, tone(pitch, np.random.default_rng(seed)), rate)
    return path


def write_tones(
    path: Path, pitches: list[float], seed: int = 0, rate: int = 8000, seconds: float = 0.4
) -> Path:
    """A WAV of one noisy tone per pitch, one after another."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    soundfile.write(path, np.concatenate([tone(p, rng, seconds) for p in pitches]), rate)
    return path


TONE_WORDS = {"low": 330.0, "middle": 660.0, "high": 1320.0}


def spoken_tones(folder: Path, rows: int = 36, seed: int = 0) -> Path:
    """A CSV of WAVs (`sound`) of two tones each and, as `text`, the words naming them in order
    ("low high"): a free-text target with a transcript per file (9 phrases)."""
    words = list(TONE_WORDS)
    records = []
    for index in range(rows):
        pair = [words[index % 3], words[(index // 3) % 3]]
        name = f"snd/{index}.wav"
        write_tones(folder / name, [TONE_WORDS[w] for w in pair], seed=seed * 100_000 + index)
        records.append({"sound": name, "text": " ".join(pair)})
    path = folder / "data.csv"
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def write_mp4(
    path: Path, brightness: int = 200, frames: int = 6, size: int = 32, with_audio: bool = False
) -> Path:
    """A tiny H.264 (or MPEG-4) clip whose frames are a flat grey of `brightness`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=16000) if with_audio else None
        for index in range(frames):
            pixels = np.full((size, size, 3), brightness, dtype=np.uint8)
            pixels[index % size, :, :] = 255 - brightness  # a moving line
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None:
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
            for start in range(0, len(wave), 1024):
                chunk = wave[start : start + 1024][None]
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate = 16000
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
    return path


def shapes_and_tones(folder: Path, rows: int = 48, seed: int = 0) -> Path:
    """A CSV whose label is shape × pitch, with text, number and category columns.

    Another `seed` draws other pictures and sounds (held-out rows the model never saw)."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(rows):
        shape = ("circle", "square")[index % 2]
        pitch = ("low", "high")[(index // 2) % 2]
        drawn = seed * 100_000 + index
        write_png(folder / "img" / f"{index}.png", shape, seed=drawn)
        write_wav(folder / "snd" / f"{index}.wav", 330.0 if pitch == "low" else 1320.0, seed=drawn)
        records.append(
            {
                "picture": f"img/{index}.png",
                "sound": f"snd/{index}.wav",
                "comment": f"sample number {index} looks {['fine', 'odd', 'plain'][index % 3]}",
                "size": float(rng.normal()),
                "colour": ["red", "blue", "green"][index % 3],
                "label": f"{shape}-{pitch}",
                "score": float(index % 2) * 2.0 + float(rng.normal(0, 0.1)),
            }
        )
    path = folder / "data.csv"
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def tiny_config(**train: object) -> Config:
    """A model small enough to train in seconds on 2 cores."""
    config = Config()
    config.model.dim = 32
    config.model.layers = 1
    config.model.heads = 2
    config.train.max_epochs = 2
    config.train.batch_size = 16
    config.preprocess.audio.n_mels = 32
    for key, value in train.items():
        setattr(config.train, key, value)
    return config


# Each class is a coloured shape, a pitch and a phrase: every column alone tells the class.
CLASSES = {  # the colour alone tells the class: a small CNN learns it from a few rows
    "red-circle": ("circle", "red", 330.0),
    "green-square": ("square", "green", 660.0),
    "blue-circle": ("circle", "blue", 1320.0),
    "yellow-square": ("square", "yellow", 2000.0),
}


def paired_classes(folder: Path, rows: int = 96, seed: int = 0) -> Path:
    """A CSV of `image`, `sound` and `note` columns that each tell the row's `label` alone
    (a match of any two by label can be learned), with a train/test `split`."""
    records = []
    names = list(CLASSES)
    for index in range(rows):
        label = names[index % len(names)]
        shape, colour, pitch = CLASSES[label]
        drawn = seed * 100_000 + index
        rng = np.random.default_rng(drawn)
        (folder / "img").mkdir(parents=True, exist_ok=True)
        draw_shape(shape, colour, rng).save(folder / "img" / f"{index}.png")
        write_wav(folder / "snd" / f"{index}.wav", pitch, seed=drawn)
        split = "test" if index % 5 == 4 else "train"  # every class has test rows
        records.append(
            {
                "image": f"img/{index}.png",
                "sound": f"snd/{index}.wav",
                "note": f"a {colour} {shape}",
                "label": label,
                "split": split,
            }
        )
    path = folder / "data.csv"
    pd.DataFrame(records).to_csv(path, index=False)
    return path


# Image targets: a label draws one of three bar shapes.
SAMPLING = {"width": 8, "heads": 2, "steps": 3}


def bars(label: int, rng: np.random.Generator) -> Image.Image:
    """A 16 x 16 grey image: a horizontal bar, a vertical bar or a square, with noise."""
    pixels = np.zeros((16, 16), np.uint8)
    if label == 0:
        pixels[6:10, :] = 255
    elif label == 1:
        pixels[:, 6:10] = 255
    else:
        pixels[4:12, 4:12] = 255
    noisy = pixels.astype(int) + rng.integers(0, 40, pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def bar_table(folder: Path, rows: int = 36) -> Path:
    """A CSV of `label` (shape0-2) and `image` (its bar picture), files beside it."""
    rng = np.random.default_rng(0)
    records = []
    for index in range(rows):
        (folder / "img").mkdir(parents=True, exist_ok=True)
        bars(index % 3, rng).save(folder / "img" / f"{index}.png")
        records.append({"label": f"shape{index % 3}", "image": f"img/{index}.png"})
    path = folder / "data.csv"
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def image_config(**options: object) -> Config:
    """`tiny_config` with an image target of a tiny U-Net (3 sampling steps by default)."""
    config = tiny_config(max_epochs=2)
    config.targets = [TargetConfig(column="image", task="image", options=SAMPLING | options)]
    return config
