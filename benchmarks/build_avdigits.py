"""AV-Digits: audio-visual connected-digit speech, built from FSDD and MNIST, with noise.

.venv/bin/python benchmarks/build_avdigits.py [--train-utterances 3000] [--test-utterances 300]
                                              [--seed 0] [--size 64] [--workers 2]
                                              [--out benchmarks/data/avdigits]

Why: a sequence-to-text task (speech recognition) small enough for a 2-core CPU, where a second
modality helps exactly when the first one fails. Each row is a spoken string of digits; the video
shows the digit being said, as a handwritten MNIST image, during the time it is spoken. As the
sound gets noisier an audio-only recogniser degrades, while the video still carries the words; a
good audio-visual model should keep its word error rate (WER) low at low SNR.

What one utterance is:
- 3 to 6 digits (count uniform, digits uniform 0-9), all said by ONE FSDD speaker (uniform over
  the 6): for each digit a random FSDD recording of that digit by that speaker. Recordings are
  joined with a silence of 0.05-0.25 s (uniform) before the first digit, between digits and after
  the last one, and resampled 8 kHz -> 16 kHz (scipy.signal.resample_poly, up 2).
- Noise, by condition: `clean`, or `{white,babble}_{10,5,0,-5,-10}dB` (11 conditions). White is
  Gaussian; babble is the sum of 3-5 FSDD recordings of OTHER speakers (each looped from a random
  offset to the utterance's length and scaled to the same RMS before summing). The SNR is on the
  whole utterance: noise power = mean(clean**2) / 10**(snr/10), pauses included. Each utterance
  draws its white noise and its babble once, so its conditions differ only by the noise gain.
  Every noisy (and clean) mix is then scaled to a peak of 0.9 (no clipping; the SNR is unchanged).
- Video: 25 fps, `--size` x `--size` grey (64 by default; 32 makes smaller files), H.264
  (libx264, or MPEG-4 part 2 where PyAV lacks it), yuv420p. Frame i (centre time (i + 0.5) / 25 s)
  shows the MNIST image of digit k, scaled up bilinearly, when that time lies in the span of
  digit k's recording, and is black otherwise (pauses). The span is the whole FSDD recording
  (FSDD's files are already trimmed close to the speech).
- The MP4's sound track is the noisy mix (AAC, 16 kHz mono, 48 kb/s); the same mix is also
  written losslessly as a 16-bit WAV, so a benchmark can take the audio from either column.

Splits, so that no test recording or image is ever seen in training:
- train rows: FSDD recordings with index 5-49 and MNIST test-set images 0-7999; one file per
  utterance, in ONE condition drawn uniformly from the 11 (keeps the training set CPU-sized).
- test rows: FSDD recordings with index 0-4 and MNIST images 8000-9999 (babble from test
  recordings of the other speakers too); EVERY test utterance is written in ALL 11 conditions, so
  WER per condition is over the same utterances. polymodal draws its validation part from train.

CSV (`avdigits.csv` in `--out`, paths relative to it), one row per file pair:
  video      video/{split}/{utterance}[_{condition}].mp4
  audio      audio/{split}/{utterance}[_{condition}].wav
  text       the digits as words, "seven three one" (0 is "zero"): the target
  digits     the digits as a string, "731" (read it with dtype=str: leading zeros matter)
  speaker    the FSDD speaker
  noise      clean | white | babble
  snr_db     the SNR in dB; 100 for clean
  condition  clean | white_10dB | ... | babble_-10dB
  utterance  the utterance's id (a test utterance has 11 rows, one per condition)
  seconds    duration of the utterance
  split      train | test
Everything is drawn from `--seed`: the same seed gives the same rows and the same samples.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pandas as pd
import soundfile
from common import DATASETS, ROOT, read_mnist, require
from PIL import Image
from scipy.signal import resample_poly

RATE = 16_000
FPS = 25
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SNRS = (10, 5, 0, -5, -10)
CLEAN_SNR = 100.0
CONDITIONS = ("clean",) + tuple(f"{kind}_{snr}dB" for kind in ("white", "babble") for snr in SNRS)
TRAIN_IMAGES = range(0, 8000)
TEST_IMAGES = range(8000, 10000)
PEAK = 0.9


def fsdd_index(folder: Path) -> dict[tuple[str, str, int], list[str]]:
    """File names by (split, speaker, digit), with FSDD's own rule: index 0-4 test, 5-49 train."""
    index: dict[tuple[str, str, int], list[str]] = {}
    for path in sorted(folder.glob("*.wav")):
        digit, speaker, number = path.stem.split("_")
        split = "test" if int(number) < 5 else "train"
        index.setdefault((split, speaker, int(digit)), []).append(path.name)
    return index


def condition_parts(condition: str) -> tuple[str, float]:
    """("white", 0.0) for "white_0dB"; ("clean", 100.0) for "clean"."""
    if condition == "clean":
        return "clean", CLEAN_SNR
    kind, snr = condition.split("_")
    return kind, float(snr.removesuffix("dB"))


@dataclass
class Utterance:
    """Everything drawn for one utterance; the workers only compute and write."""

    name: str
    split: str
    speaker: str
    digits: list[int]
    recordings: list[str]  # one FSDD file per digit
    images: list[int]  # one MNIST index per digit
    pauses: list[float]  # len(digits) + 1 silences, in seconds
    babble: list[str]  # FSDD files of other speakers
    conditions: list[str]
    seed: int  # for the white noise and the babble offsets


def plan(
    count: int, split: str, rng: np.random.Generator, fsdd: dict, labels: np.ndarray
) -> list[Utterance]:
    """Draw `count` utterances of one split (all conditions for test, one for train)."""
    speakers = sorted({speaker for _, speaker, _ in fsdd})
    pool = np.array(TEST_IMAGES if split == "test" else TRAIN_IMAGES)
    by_digit = {digit: pool[labels[pool] == digit] for digit in range(10)}
    utterances = []
    for number in range(count):
        speaker = str(rng.choice(speakers))
        digits = [int(d) for d in rng.integers(0, 10, size=int(rng.integers(3, 7)))]
        others = [s for s in speakers if s != speaker]
        babble = []
        for _ in range(int(rng.integers(3, 6))):
            key = (split, str(rng.choice(others)), int(rng.integers(0, 10)))
            babble.append(str(rng.choice(fsdd[key])))
        if split == "test":
            conditions = list(CONDITIONS)
        else:
            conditions = [CONDITIONS[int(rng.integers(len(CONDITIONS)))]]
        utterances.append(
            Utterance(
                name=f"{split}{number:05d}",
                split=split,
                speaker=speaker,
                digits=digits,
                recordings=[str(rng.choice(fsdd[(split, speaker, d)])) for d in digits],
                images=[int(rng.choice(by_digit[d])) for d in digits],
                pauses=[float(p) for p in rng.uniform(0.05, 0.25, size=len(digits) + 1)],
                babble=babble,
                conditions=conditions,
                seed=int(rng.integers(2**31)),
            )
        )
    return utterances


def load_16k(name: str) -> np.ndarray:
    """One FSDD recording, resampled 8 kHz -> 16 kHz, float64."""
    wave, rate = soundfile.read(FSDD / name, dtype="float64")
    assert rate == 8000, f"{name}: {rate} Hz"
    return resample_poly(wave, RATE // rate, 1)


def speech(utterance: Utterance) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The clean utterance at 16 kHz and each digit's (start, end) time in seconds."""
    parts, spans, at = [], [], 0
    for pause, name in zip(utterance.pauses, utterance.recordings, strict=False):
        silence = int(round(pause * RATE))
        wave = load_16k(name)
        parts += [np.zeros(silence), wave]
        at += silence
        spans.append((at / RATE, (at + len(wave)) / RATE))
        at += len(wave)
    parts.append(np.zeros(int(round(utterance.pauses[-1] * RATE))))
    return np.concatenate(parts), spans


def loop_to(wave: np.ndarray, length: int, offset: int) -> np.ndarray:
    """`wave` repeated from `offset` (circularly) until it is `length` samples long."""
    return np.resize(np.roll(wave, -offset), length)


def noises(utterance: Utterance, length: int) -> dict[str, np.ndarray]:
    """Unit-power white noise and babble of `length` samples, drawn from the utterance's seed."""
    rng = np.random.default_rng(utterance.seed)
    white = rng.standard_normal(length)
    babble = np.zeros(length)
    for name in utterance.babble:
        wave = load_16k(name)
        stream = loop_to(wave, length, int(rng.integers(len(wave))))
        babble += stream / (np.sqrt(np.mean(stream**2)) + 1e-12)
    return {
        "white": white / np.sqrt(np.mean(white**2)),
        "babble": babble / np.sqrt(np.mean(babble**2)),
    }


def mix(clean: np.ndarray, noise: dict[str, np.ndarray], condition: str) -> np.ndarray:
    """The clean speech plus noise at the condition's SNR, scaled to a peak of PEAK."""
    kind, snr = condition_parts(condition)
    out = clean.copy()
    if kind != "clean":
        out += noise[kind] * np.sqrt(np.mean(clean**2) / 10 ** (snr / 10))
    return (out * PEAK / np.max(np.abs(out))).astype(np.float32)


def frames(
    spans: list[tuple[float, float]], pictures: list[np.ndarray], seconds: float, size: int
) -> list[np.ndarray]:
    """The grey video frames: digit k's picture while it is spoken, black in between."""
    blank = np.zeros((size, size), np.uint8)
    out = []
    for index in range(math.ceil(seconds * FPS)):
        centre = (index + 0.5) / FPS
        shown = [k for k, (start, end) in enumerate(spans) if start <= centre < end]
        out.append(pictures[shown[0]] if shown else blank)
    return out


def write_mp4(path: Path, video: list[np.ndarray], audio: np.ndarray) -> None:
    """An MP4 with the grey frames (25 fps) and the audio as AAC, 16 kHz mono."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(VIDEO_CODEC, rate=FPS)
        stream.width = stream.height = video[0].shape[0]
        stream.pix_fmt = "yuv420p"
        options = {"threads": "1"}  # the pool already uses the cores
        if VIDEO_CODEC == "libx264":
            options |= {"preset": "medium", "crf": "20"}
        stream.codec_context.options = options
        sound = container.add_stream("aac", rate=RATE, layout="mono")
        sound.bit_rate = 48_000
        for index, pixels in enumerate(video):
            frame = av.VideoFrame.from_ndarray(pixels, format="gray").reformat(format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        for start in range(0, len(audio), 1024):
            frame = av.AudioFrame.from_ndarray(
                audio[None, start : start + 1024], format="fltp", layout="mono"
            )
            frame.sample_rate = RATE
            frame.pts = start
            for packet in sound.encode(frame):
                container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)


def build(task: tuple[Utterance, Path, int]) -> tuple[list[dict], int]:
    """Write one utterance's files (one pair per condition); its CSV rows and bytes written."""
    utterance, out, size = task
    clean, spans = speech(utterance)
    noise = noises(utterance, len(clean))
    pictures = [
        np.asarray(Image.fromarray(IMAGES[i]).resize((size, size), Image.BILINEAR))
        for i in utterance.images
    ]
    video = frames(spans, pictures, len(clean) / RATE, size)
    rows, written = [], 0
    for condition in utterance.conditions:
        stem = utterance.name if utterance.split == "train" else f"{utterance.name}_{condition}"
        video_path = Path("video") / utterance.split / f"{stem}.mp4"
        audio_path = Path("audio") / utterance.split / f"{stem}.wav"
        noisy = mix(clean, noise, condition)
        soundfile.write(out / audio_path, noisy, RATE, subtype="PCM_16")
        write_mp4(out / video_path, video, noisy)
        written += (out / audio_path).stat().st_size + (out / video_path).stat().st_size
        kind, snr = condition_parts(condition)
        rows.append(
            {
                "video": video_path.as_posix(),
                "audio": audio_path.as_posix(),
                "text": " ".join(WORDS[d] for d in utterance.digits),
                "digits": "".join(str(d) for d in utterance.digits),
                "speaker": utterance.speaker,
                "noise": kind,
                "snr_db": snr,
                "condition": condition,
                "utterance": utterance.name,
                "seconds": round(len(clean) / RATE, 3),
                "split": utterance.split,
            }
        )
    return rows, written


def pick_codec() -> str:
    """libx264 where this PyAV has it, else MPEG-4 part 2."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


FSDD = DATASETS / "raw" / "fsdd" / "recordings"
IMAGES, LABELS = np.empty((0, 28, 28), np.uint8), np.empty(0, np.uint8)  # filled by main
VIDEO_CODEC = pick_codec()


def main() -> None:
    global IMAGES, LABELS  # read by the forked workers
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-utterances", type=int, default=3000)
    parser.add_argument("--test-utterances", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64, help="video frame side, pixels (even)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "data" / "avdigits")
    args = parser.parse_args()
    started = time.perf_counter()
    IMAGES, LABELS = read_mnist(require(DATASETS / "raw" / "mnist"))
    fsdd = fsdd_index(require(FSDD))
    rng = np.random.default_rng(args.seed)
    utterances = plan(args.train_utterances, "train", rng, fsdd, LABELS)
    utterances += plan(args.test_utterances, "test", rng, fsdd, LABELS)
    for split in ("train", "test"):
        for kind in ("video", "audio"):
            (args.out / kind / split).mkdir(parents=True, exist_ok=True)
    tasks = [(utterance, args.out, args.size) for utterance in utterances]
    files = sum(len(u.conditions) for u in utterances)
    print(f"{len(utterances)} utterances, {files} MP4 + WAV pairs, video {VIDEO_CODEC}")
    rows, written, done = [], 0, 0
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        for built, size in pool.imap(build, tasks, chunksize=4):
            rows += built
            written += size
            done += 1
            if done % 200 == 0 or done == len(tasks):
                seconds = time.perf_counter() - started
                print(f"  {done}/{len(tasks)} utterances, {seconds:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    csv = args.out / "avdigits.csv"
    table.to_csv(csv, index=False)
    seconds = time.perf_counter() - started
    counts = table["split"].value_counts().to_dict()
    print(f"wrote {csv}: {len(table)} rows ({counts}), {seconds:.0f} s, {written / 2**20:.0f} MB")
    minutes = table.drop_duplicates("utterance").groupby("split")["seconds"].sum() / 60
    print(f"minutes of utterances per split (each counted once): {minutes.round(1).to_dict()}")


if __name__ == "__main__":
    main()
