"""A tiny trained model shared by the serving tests, a real server on a free loopback port, and
headless Chromium for the page tests."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService

from polymodal.data.cache import FeatureCache
from polymodal.demo import make_demo_data
from polymodal.model import Model
from polymodal.search.embeddings import build_index, index_source
from polymodal.serving.app import create_app
from polymodal.serving.settings import ServeSettings
from tests.media import bar_table, image_config, shapes_and_tones, tiny_config

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--no-first-run",
    "--window-size=1200,900",
]  # fmt: skip


@contextmanager
def chromium(*flags: str) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a fresh profile folder and any extra command-line flags; it quits
    and its profile is removed when the block ends."""
    # No skip: without Chromium the page tests fail, naming what to install.
    assert CHROMIUM.exists() and DRIVER.exists(), "install Debian's chromium and chromium-driver"
    with tempfile.TemporaryDirectory(prefix="polymodal-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in [*FLAGS, f"--user-data-dir={profile}", *flags]:
            options.add_argument(flag)
        browser = webdriver.Chrome(options=options, service=DriverService(str(DRIVER)))
        try:
            yield browser
        finally:
            browser.quit()


@dataclass
class Trained:
    data: Path  # the CSV; its files lie beside it
    model_dir: Path

    @property
    def folder(self) -> Path:
        return self.data.parent


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    root = tmp_path_factory.mktemp("serving")
    data = shapes_and_tones(root / "data", rows=32)
    cache = FeatureCache(root / "cache")
    Model(target="label", config=tiny_config(), cache=cache).fit(data, out=root / "model")
    return Trained(data, root / "model")


@pytest.fixture(scope="session")
def image_trained(tmp_path_factory) -> Trained:
    """A tiny image-target model: a label (shape0-2) draws a bar shape, in 3 sampling steps."""
    root = tmp_path_factory.mktemp("image_target")
    data = bar_table(root / "data", rows=24)
    cache = FeatureCache(root / "cache")
    Model(config=image_config(), cache=cache).fit(data, out=root / "model")
    return Trained(data, root / "model")


def data_lines(path: Path) -> int:
    """Rows in a predictions CSV written so far (its lines but the header)."""
    return max(0, path.read_bytes().count(b"\n") - 1) if path.exists() else 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LiveServer:
    """uvicorn serving the app in a background thread, on 127.0.0.1 only."""

    def __init__(self, settings: ServeSettings) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def live_server(trained):
    with LiveServer(ServeSettings(model_dir=trained.model_dir)) as server:
        yield server


@dataclass
class Indexed:
    """A tiny model trained on the demo data, with an index of its images and one of its notes."""

    data: Path  # data.csv; images/ and audio/ beside it
    model_dir: Path
    image_db: Path
    note_db: Path

    @property
    def folder(self) -> Path:
        return self.data.parent


@pytest.fixture(scope="session")
def indexed(tmp_path_factory) -> Indexed:
    root = tmp_path_factory.mktemp("search")
    data = make_demo_data(root / "demo", rows=24)
    cache = FeatureCache(root / "cache")
    model_dir = root / "model"
    Model(target="label", config=tiny_config(), cache=cache).fit(data, out=model_dir)
    model = Model.load(model_dir, cache=FeatureCache(enabled=False))
    dbs = {}
    for column in ("image", "note"):
        dbs[column] = root / f"{column}-index"
        build_index(model, index_source(model, model_dir, column), data, dbs[column], None, False)
    return Indexed(data, model_dir, dbs["image"], dbs["note"])
