import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("POLYMODAL_PROGRESS", "0")


def user_cache_dirs() -> list[Path]:
    """Where a feature cache would go if the tests did not say otherwise: the user's own."""
    found = [Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "polymodal"]
    if os.environ.get("POLYMODAL_CACHE"):
        found.append(Path(os.environ["POLYMODAL_CACHE"]))
    return [path.resolve() for path in found]


# Set at import, before any fixture of any scope runs: module- and session-scoped fixtures (a
# model fitted once per module, say) and every subprocess a test starts inherit it, so no test
# reads or writes the user's cache. `isolated_cache` below narrows it further for each test.
USER_CACHES = user_cache_dirs()
SESSION_CACHE = Path(tempfile.mkdtemp(prefix="polymodal-test-cache-"))
os.environ["POLYMODAL_CACHE"] = str(SESSION_CACHE)


def is_user_cache(path: Path) -> bool:
    resolved = path.resolve()
    return any(resolved == user or user in resolved.parents for user in USER_CACHES)


@pytest.fixture(scope="session", autouse=True)
def no_user_cache():
    """Fail any test (or fixture) that opens a feature cache in the user's cache folder."""
    from polymodal.data.cache import FeatureCache

    original = FeatureCache.__init__

    def guarded(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.enabled and is_user_cache(self.root):
            raise AssertionError(f"a test opened the user's feature cache {self.root}")

    FeatureCache.__init__ = guarded
    yield
    FeatureCache.__init__ = original
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own feature cache, so no test sees another's decoded files."""
    monkeypatch.setenv("POLYMODAL_CACHE", str(tmp_path / "cache"))
