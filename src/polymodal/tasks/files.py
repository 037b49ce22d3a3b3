"""Files a generated target writes (image and music targets): names safe for a file system,
exclusive creation, so an existing file is never overwritten (a name already taken gets -2,
-3, ...), and the key of the provenance mark each format carries in its own metadata."""

from __future__ import annotations

import re
from pathlib import Path

MARK = "polymodal:generated"


def write_new(folder: Path, stem: str, data: bytes, suffix: str) -> Path:
    """Write `data` to folder/stem+suffix, or stem-2+suffix, ... if taken: never over a file."""
    folder.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        path = folder / (f"{stem}{suffix}" if number == 1 else f"{stem}-{number}{suffix}")
        try:
            with open(path, "xb") as handle:
                handle.write(data)
            return path
        except FileExistsError:
            number += 1


def safe_stem(text: str, fallback: str) -> str:
    """A column name made safe for a file name (`fallback` when nothing is left of it)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or fallback
