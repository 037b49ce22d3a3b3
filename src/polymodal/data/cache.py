"""On-disk cache of decoded features, keyed by file content and preprocessing settings.

Decoding images, audio and video is the slow part of reading a table. Keying by the file's
bytes (not its path or time stamp) means a renamed or copied file is still a hit and an
edited file is never a stale hit; keying by the settings means a changed sample rate or
image size never reuses features made under the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np


def default_cache_dir() -> Path:
    """$POLYMODAL_CACHE, else $XDG_CACHE_HOME/polymodal/features, else ~/.cache/..."""
    if os.environ.get("POLYMODAL_CACHE"):
        return Path(os.environ["POLYMODAL_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "polymodal" / "features"


def settings_key(settings: dict) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class FeatureCache:
    """Arrays stored as .npy files under `root/<settings key>/<content key>.npy`.

    `enabled=False` keeps the interface but stores nothing (for tests and one-off calls).
    """

    def __init__(self, root: str | Path | None = None, enabled: bool = True) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def _path(self, content: str, settings: str) -> Path:
        return self.root / settings / content[:2] / f"{content}.npy"

    def get(self, content: str, settings: str) -> np.ndarray | None:
        if not self.enabled:
            return None
        path = self._path(content, settings)
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return array

    def put(self, content: str, settings: str, array: np.ndarray) -> None:
        if not self.enabled:
            return
        path = self._path(content, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(partial, array, allow_pickle=False)
        os.replace(partial, path)  # atomic: a crash never leaves a half-written entry
