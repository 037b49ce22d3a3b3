"""Video: decode with PyAV, sample N frames evenly, resize and normalise each like an image.

The sound track of a video column is read by `polymodal.modalities.audio.preprocess` (through PyAV) when the
config declares a derived audio input: `columns: {clip_sound: {kind: audio, source: clip}}`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import Image
from pydantic import BaseModel

from polymodal.config import VideoSettings
from polymodal.data.cache import FeatureCache
from polymodal.data.column import FeatureColumn
from polymodal.data.files import decode_file_column, stack_padded
from polymodal.data.pretrained import PretrainedState
from polymodal.data.problems import DecodeError, ProblemLog
from polymodal.modalities.image.pretrained import image_normalisation
from polymodal.modalities.video.pretrained import video_frames

MEAN, STD = 0.45, 0.25


class VideoState(BaseModel):
    kind: Literal["video"] = "video"
    column: str
    source: str
    frames: int
    size: int
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
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise DecodeError("no video stream in file")
            images = [
                frame.to_image().convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
                for frame in container.decode(video=0)
            ]
    except DecodeError:
        raise
    except (av.FFmpegError, ValueError, IndexError, OSError) as error:
        raise DecodeError(f"not a readable video ({type(error).__name__})") from None
    if not images:
        raise DecodeError("video has no frames")
    picks = np.linspace(0, len(images) - 1, frames).round().astype(int)
    stacked = np.stack([np.asarray(images[i], np.float32) / 255.0 for i in picks])
    shift = np.asarray(mean or [MEAN] * 3, np.float32)[:, None, None]
    scale = np.asarray(std or [STD] * 3, np.float32)[:, None, None]
    return ((stacked.transpose(0, 3, 1, 2) - shift) / scale).astype(np.float16)


def fit_video(
    cells: list[object],
    column: str,
    base_dir: Path,
    settings: VideoSettings,
    source: str,
    pretrained: PretrainedState | None = None,
) -> VideoState:
    """Frames and size from the settings, or from the pretrained encoder (a video model reads
    a fixed number of frames; an image model reads each frame at its own size)."""
    if not pretrained:
        return VideoState(column=column, source=source, frames=settings.frames, size=settings.size)
    size, mean, std = image_normalisation(pretrained)
    frames = video_frames(pretrained, settings.frames)
    return VideoState(
        column=column, source=source, frames=frames, size=size, mean=mean, std=std,
        pretrained=pretrained,
    )  # fmt: skip


def encode_video(
    state: VideoState,
    cells: list[object],
    base_dir: Path,
    log: ProblemLog,
    cache: FeatureCache,
    row_ids: list[int] | None = None,
) -> FeatureColumn:
    settings = {"kind": "video", "frames": state.frames, "size": state.size, "v": 1}
    if state.pretrained:
        settings |= {"mean": state.mean, "std": state.std}
    arrays = decode_file_column(
        cells,
        column=state.column,
        base_dir=base_dir,
        decode=lambda _path, data: decode_video(
            data, state.frames, state.size, state.mean, state.std
        ),
        settings=settings,
        log=log,
        cache=cache,
        row_ids=row_ids,
    )
    values = stack_padded(arrays, (state.frames, 3, state.size, state.size), np.float16)
    return FeatureColumn(values, np.array([a is not None for a in arrays]))
