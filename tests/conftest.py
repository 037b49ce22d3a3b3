import os

import pytest

os.environ.setdefault("POLYMODAL_PROGRESS", "0")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own feature cache, so no test sees another's decoded files."""
    monkeypatch.setenv("POLYMODAL_CACHE", str(tmp_path / "cache"))
