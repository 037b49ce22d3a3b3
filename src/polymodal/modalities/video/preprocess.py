"""Video: decode with PyAV, sample N frames evenly (or `fps` frames per second of clip time),
resize and normalise each like an image.

With `fps` set, frame k shows the clip at time k / fps (the latest frame presented by then), so
the visual sequence follows the same timeline as the sound track's spectrogram; clips are
cropped at `max_seconds` and shorter ones padded, their real frame counts kept as `lengths`.

The sound track of a video column is read by `polymodal.modalities.audio.preprocess` (through PyAV) when the
config declares a derived audio input: `columns: {clip_sound: {kind: audio, source: clip}}`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import Image
from pydantic import BaseModel

from polymodal.config import VideoSettings
from polymodal.data.cache import FeatureCache
from polymodal.data.column import FeatureColumn, is_missing
from polymodal.data.files import decode_file_column, resolve_path, stack_padded
from polymodal.data.pretrained import PretrainedState
from polymodal.data.problems import DecodeError, ProblemLog
from polymodal.modalities.common import crop_length
from polymodal.modalities.image.pretrained import image_normalisation
from polymodal.modalities.video.pretrained import per_frame_tokens, video_frames

MEAN, STD = 0.45, 0.25
FIT_SAMPLE = 128  # clips whose durations set the crop length, as for audio
MAX_SECONDS = 20.0  # the longest crop a fitted (not configured) `max_seconds` may give
DEFAULT_SECONDS = 5.0  # when no training clip could be read
TIME_EPS = 1e-6  # seconds: presentation times are floats; a frame "at" t counts as shown at t


class VideoState(BaseModel):
    kind: Literal["video"] = "video"
    column: str
    source: str
    frames: int  # with `fps`: round(fps × crop seconds), the most frames a clip keeps
    size: int
    fps: float | None = None  # frames per second of clip time; None: frames spread evenly
    mean: list[float] = [MEAN] * 3
    std: list[float] = [STD] * 3
    pretrained: PretrainedState | None = None


def decode_video(
    data: bytes,
    frames: int,
    size: int,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> np.ndarray:
    """Bytes of any FFmpeg-readable video → float16 [frames, 3, size, size], normalised.

    Frames are taken evenly over the clip; a clip shorter than `frames` repeats frames.
    """

    def every_frame(container: av.container.InputContainer) -> list[Image.Image]:
        return [
            frame.to_image().convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            for frame in container.decode(video=0)
        ]

    images = read_frames(data, every_frame)
    picks = np.linspace(0, len(images) - 1, frames).round().astype(int)
    return normalise([images[i] for i in picks], mean, std)


def read_frames(
    data: bytes, pick: Callable[[av.container.InputContainer], list[Image.Image]]
) -> list[Image.Image]:
    """The frames `pick` takes from the video in `data`; any failure of FFmpeg's, a file
    without a video stream or one with no frame is a DecodeError naming why."""
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise DecodeError("no video stream in file")
            images = pick(container)
    except DecodeError:
        raise
    except (av.FFmpegError, ValueError, IndexError, OSError) as error:
        raise DecodeError(f"not a readable video ({type(error).__name__})") from None
    if not images:
        raise DecodeError("video has no frames")
    return images


def normalise(
    images: list[Image.Image], mean: list[float] | None, std: list[float] | None
) -> np.ndarray:
    """RGB images → float16 [frames, 3, H, W], normalised per channel."""
    stacked = np.stack([np.asarray(image, np.float32) / 255.0 for image in images])
    shift = np.asarray(mean or [MEAN] * 3, np.float32)[:, None, None]
    scale = np.asarray(std or [STD] * 3, np.float32)[:, None, None]
    return ((stacked.transpose(0, 3, 1, 2) - shift) / scale).astype(np.float16)


def decode_video_at_fps(
    data: bytes,
    fps: float,
    frames: int,
    size: int,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> np.ndarray:
    """Bytes of any FFmpeg-readable video → float16 [length, 3, size, size], length ≤ `frames`.

    Frame k is the latest frame presented at or before t = k / fps, times counted from the
    first frame's presentation time; a clip keeps the sample times before its end (its last
    frame's time plus that frame's duration), at most `frames` of them.
    """

    def at_fps(container: av.container.InputContainer) -> list[Image.Image]:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0) or None
        return sample_at_fps(timed_frames(container, rate), rate, fps, frames, size)

    return normalise(read_frames(data, at_fps), mean, std)


def timed_frames(
    container: av.container.InputContainer, rate: float | None
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Each decoded frame with its presentation time, in seconds from the first frame's."""
    start = previous = None
    for frame in container.decode(video=0):
        time = frame_time(frame, previous, rate)
        start = time if start is None else start
        previous = time
        yield time - start, frame


def sample_at_fps(
    timed: Iterable[tuple[float, av.VideoFrame]],
    rate: float | None,
    fps: float,
    frames: int,
    size: int,
) -> list[Image.Image]:
    """For t = k / fps before the clip's end, the latest frame presented at or before t,
    resized; at most `frames` of them. Decoding stops once the last one is known."""
    picks: list[Image.Image] = []
    latest: av.VideoFrame | None = None
    shown: Image.Image | None = None  # `latest`, resized once, when first picked
    latest_time = end = 0.0

    def pick_until(limit: float) -> None:
        nonlocal shown
        while len(picks) < frames and len(picks) / fps < limit - TIME_EPS:
            if shown is None:
                shown = resized(latest, size)
            picks.append(shown)

    for time, frame in timed:
        if latest is not None:
            if time < latest_time:
                continue  # presented before the frame kept already: out of order
            pick_until(time)
            if len(picks) >= frames:
                break
        latest, latest_time, shown = frame, time, None
        end = time + frame_duration(frame, rate)
    if latest is not None:
        pick_until(max(end, 2 * TIME_EPS))  # a lone frame without a duration gives one
    return picks


def resized(frame: av.VideoFrame, size: int) -> Image.Image:
    return frame.to_image().convert("RGB").resize((size, size), Image.Resampling.BILINEAR)


def frame_time(frame: av.VideoFrame, previous: float | None, rate: float | None) -> float:
    """A frame's presentation time in seconds; without one, one frame period after the last."""
    if frame.time is not None:
        return float(frame.time)
    if previous is None:
        return 0.0
    return previous + (1 / rate if rate else 0.0)


def frame_duration(frame: av.VideoFrame, rate: float | None) -> float:
    """How long a frame stays on screen: its own duration, else one period of the stream."""
    if frame.duration and frame.time_base:
        return float(frame.duration * frame.time_base)
    return 1 / rate if rate else 0.0


def clip_seconds(data: bytes) -> float:
    """A clip's length in seconds, from its video packets' times (nothing is decoded)."""
    first = last = None
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise DecodeError("no video stream in file")
            for packet in container.demux(video=0):
                if packet.pts is None or packet.time_base is None:
                    continue
                begin = float(packet.pts * packet.time_base)
                finish = begin + float((packet.duration or 0) * packet.time_base)
                first = begin if first is None else min(first, begin)
                last = finish if last is None else max(last, finish)
    except DecodeError:
        raise
    except (av.FFmpegError, ValueError, IndexError, OSError) as error:
        raise DecodeError(f"not a readable video ({type(error).__name__})") from None
    if first is None or last is None:
        raise DecodeError("video has no frames")
    return last - first


def fit_seconds(paths: list[Path], settings: VideoSettings, whole: bool = False) -> float:
    """The crop length: `max_seconds`, else `crop_length` of a sample of the training clips'
    lengths (as audio fits its crop, so a sound track and its frames cover the same time), at
    most MAX_SECONDS."""
    if settings.max_seconds:
        return settings.max_seconds
    seconds = []
    for path in paths[:: max(1, len(paths) // FIT_SAMPLE)][:FIT_SAMPLE]:
        try:
            seconds.append(clip_seconds(path.read_bytes()))
        except (OSError, DecodeError):
            continue
    fitted = crop_length(seconds, whole) if seconds else DEFAULT_SECONDS
    return min(fitted, MAX_SECONDS)


def fit_video(
    cells: list[object],
    column: str,
    base_dir: Path,
    settings: VideoSettings,
    source: str,
    pretrained: PretrainedState | None = None,
    whole: bool = False,
) -> VideoState:
    """Frames and size from the settings, or from the pretrained encoder (a video model reads
    a fixed number of frames; an image model reads each frame at its own size).

    With `fps`, frames = round(fps × crop seconds), the crop being `max_seconds` or fitted
    from the training clips; a video model's own frame count wins (it then covers
    frames / fps seconds)."""
    frames = settings.frames
    if settings.fps:
        paths = [resolve_path(cell, base_dir) for cell in cells if not is_missing(cell)]
        frames = max(1, round(settings.fps * fit_seconds(paths, settings, whole)))
    if not pretrained:
        return VideoState(
            column=column, source=source, frames=frames, size=settings.size, fps=settings.fps
        )
    size, mean, std = image_normalisation(pretrained)
    if not per_frame_tokens(pretrained):
        frames = video_frames(pretrained, frames)
    return VideoState(
        column=column, source=source, frames=frames, size=size, mean=mean, std=std,
        fps=settings.fps, pretrained=pretrained,
    )  # fmt: skip


def encode_video(
    state: VideoState,
    cells: list[object],
    base_dir: Path,
    log: ProblemLog,
    cache: FeatureCache,
    row_ids: list[int] | None = None,
) -> FeatureColumn:
    """Frames [rows, frames, 3, size, size]; with `fps`, clips shorter than the crop are
    padded with zeros and `lengths` counts each row's real frames."""
    settings: dict = {"kind": "video", "frames": state.frames, "size": state.size, "v": 1}
    if state.pretrained:
        settings |= {"mean": state.mean, "std": state.std}
    if state.fps:
        settings |= {"fps": state.fps}

    def decode(_path: Path, data: bytes) -> np.ndarray:
        if state.fps:
            return decode_video_at_fps(
                data, state.fps, state.frames, state.size, state.mean, state.std
            )
        return decode_video(data, state.frames, state.size, state.mean, state.std)

    arrays = decode_file_column(
        cells,
        column=state.column,
        base_dir=base_dir,
        decode=decode,
        settings=settings,
        log=log,
        cache=cache,
        row_ids=row_ids,
    )
    shape = (state.frames, 3, state.size, state.size)
    if not state.fps:
        values = stack_padded(arrays, shape, np.float16)
        return FeatureColumn(values, np.array([a is not None for a in arrays]))
    values = np.zeros((len(arrays), *shape), dtype=np.float16)
    lengths = np.zeros(len(arrays), dtype=np.int64)
    for index, array in enumerate(arrays):
        if array is not None:
            kept = array[: state.frames]
            values[index, : len(kept)] = kept
            lengths[index] = len(kept)
    return FeatureColumn(values, lengths > 0, lengths)
