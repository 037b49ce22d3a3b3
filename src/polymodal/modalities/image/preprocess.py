"""Images: decode with Pillow, resize to a square, grey or colour, normalise per channel."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel

from polymodal.config import ImageSettings
from polymodal.data.cache import FeatureCache
from polymodal.data.column import FeatureColumn, is_missing, normalised_float16
from polymodal.data.files import decode_file_column, resolve_path, stack_padded
from polymodal.data.pretrained import PretrainedState
from polymodal.data.problems import DecodeError, ProblemLog
from polymodal.modalities.image.pretrained import image_normalisation

Image.MAX_IMAGE_PIXELS = 64_000_000  # Pillow's decompression-bomb guard, kept on
FIT_SAMPLE = 256


class ImageState(BaseModel):
    kind: Literal["image"] = "image"
    column: str
    source: str
    size: int
    channels: int
    mean: list[float]
    std: list[float]
    pretrained: PretrainedState | None = None


def decode_image(data: bytes, size: int, channels: int) -> np.ndarray:
    """Bytes of any Pillow format → float32 [channels, size, size] in [0, 1]."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DecodeError(f"not a readable image ({type(error).__name__}: {error})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DecodeError("image is too large (decompression-bomb guard)") from None
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def fit_image(
    cells: list[object],
    column: str,
    base_dir: Path,
    settings: ImageSettings,
    source: str,
    pretrained: PretrainedState | None = None,
) -> ImageState:
    """Pick size and channels from a sample of the training images unless set; a pretrained
    encoder dictates its own size and normalisation."""
    if pretrained:
        size, mean, std = image_normalisation(pretrained)
        return ImageState(
            column=column, source=source, size=size, channels=3, mean=mean, std=std,
            pretrained=pretrained,
        )  # fmt: skip
    paths = [resolve_path(cell, base_dir) for cell in cells if not is_missing(cell)]
    step = max(1, len(paths) // FIT_SAMPLE)
    sides, colour = [], False
    for path in paths[::step][:FIT_SAMPLE]:
        try:
            with Image.open(path) as image:
                sides.append(max(image.size))
                colour |= image.mode not in ("1", "L", "LA", "I", "I;16", "F")
        except (OSError, ValueError, SyntaxError):
            continue
    size = settings.size or _size_from_sides(sides)
    channels = settings.channels or (3 if colour or not sides else 1)
    mean, std = _channel_stats(paths[::step][:64], size, channels)
    return ImageState(
        column=column, source=source, size=size, channels=channels, mean=mean, std=std
    )


def _channel_stats(paths: list[Path], size: int, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over a sample, so inputs reach the CNN near zero mean."""
    pixels = []
    for path in paths:
        try:
            pixels.append(decode_image(path.read_bytes(), size, channels))
        except (OSError, DecodeError):
            continue
    if not pixels:
        return [0.5] * channels, [0.25] * channels
    stacked = np.stack(pixels)
    mean = stacked.mean(axis=(0, 2, 3))
    std = np.maximum(stacked.std(axis=(0, 2, 3)), 1e-3)
    return [float(v) for v in mean], [float(v) for v in std]


def _size_from_sides(sides: list[int]) -> int:
    """Median side, between 16 and 64: small enough for a CPU, and never upscaled past the
    data (a 28-pixel image stays 28, not 32)."""
    if not sides:
        return 64
    return int(min(64, max(16, int(np.median(sides)))))


def encode_images(
    state: ImageState,
    cells: list[object],
    base_dir: Path,
    log: ProblemLog,
    cache: FeatureCache,
    row_ids: list[int] | None = None,
) -> FeatureColumn:
    settings = {"kind": "image", "size": state.size, "channels": state.channels, "v": 1}
    arrays = decode_file_column(
        cells,
        column=state.column,
        base_dir=base_dir,
        decode=lambda _path, data: decode_image(data, state.size, state.channels).astype(
            np.float16
        ),
        settings=settings,
        log=log,
        cache=cache,
        row_ids=row_ids,
    )
    present = np.array([array is not None for array in arrays])
    raw = stack_padded(arrays, (state.channels, state.size, state.size), np.float16)
    mean = np.asarray(state.mean, np.float32)[:, None, None]
    std = np.asarray(state.std, np.float32)[:, None, None]
    values = normalised_float16(raw, mean, std, present[:, None, None, None])
    return FeatureColumn(values, present)
