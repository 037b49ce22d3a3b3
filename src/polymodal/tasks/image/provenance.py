"""Generated images carry a mark: a PNG text chunk `polymodal:generated` holding JSON that says
which model made the file, from which row and with which sampling settings.

Files are written with `tasks/files.write_new`, never over an existing one. `read_mark` tells
a generated file from any other (`ImageTask.count_generated`, which `polymodal inspect` asks),
so generated rows added to a training set stay known.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from polymodal.tasks.files import MARK


def png_bytes(pixels: np.ndarray, mark: dict[str, Any]) -> bytes:
    """uint8 pixels [S, S, C] (C 1 or 3) → PNG bytes carrying `mark`."""
    info = PngImagePlugin.PngInfo()
    info.add_text(MARK, json.dumps(mark, sort_keys=True))
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def data_url(pixels: np.ndarray, mark: dict[str, Any]) -> str:
    """The PNG as a data: URL (a serving response has no folder to write to)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels, mark)).decode("ascii")


def read_mark(path: str | Path) -> dict[str, Any] | None:
    """The mark of a generated PNG; None for any other file (or one that cannot be read)."""
    try:
        with Image.open(path) as image:
            text = image.info.get(MARK)  # text chunks before the pixels: nothing decoded
    except (OSError, ValueError, SyntaxError):
        return None
    if text is None:
        return None
    try:
        mark = json.loads(text)
    except json.JSONDecodeError:
        return None
    return mark if isinstance(mark, dict) else None
