"""The HTML report: one self-contained file, checked in real headless Chromium."""

import html
import json
import re
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from polymodal.cli import app
from polymodal.explain import ReportOptions, build_report, write_report

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


class Scripts(HTMLParser):
    """What in a page could run: script-like tags, on* handlers and javascript: URLs."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.found: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "iframe", "object", "embed"):
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}={value}>")


def scripts(page: str) -> list[str]:
    assert "<script" not in page.lower()
    return Scripts(page).found


COMPARISON = {
    "target": "label", "metric": "accuracy", "higher_is_better": True, "scored_rows": 8,
    "configurations": [
        {"name": "image only", "family": "unimodal", "mean": 0.5, "std": 0.02, "seconds": 3.0,
         "parameters": 1000, "runs": []},
        {"name": "fusion: attention", "family": "fusion", "mean": 0.9, "std": 0.01,
         "seconds": 5.0, "parameters": 2000, "runs": []},
    ],
    "modality_gain": {"best_unimodal": "image only", "best_multimodal": "fusion: attention",
                      "gain": 0.4, "standard_error": 0.02},
}  # fmt: skip


@pytest.fixture(scope="module")
def report_file(full_model, shapes):
    model, folder = full_model
    (folder.parent / "comparison").mkdir(exist_ok=True)
    (folder.parent / "comparison" / "comparison.json").write_text(json.dumps(COMPARISON))
    return write_report(
        model, folder, folder / "report.html", shapes, ReportOptions(rows=[0, 1], attack_rows=16)
    )


def test_report_is_self_contained_and_has_every_section(report_file):
    page = report_file.read_text()
    assert not EXTERNAL.search(page), "no src/href may point at another site"
    assert not scripts(page), "no scripts (README)"
    assert "http://" not in page and "https://" not in page
    for section in (
        "Model", "Training", "Metrics: valid", "Comparison with unimodal models",
        "Modality contributions", "Example attributions", "Robustness", "Metrics by colour",
    ):  # fmt: skip
        assert f"<h2>{section}" in page, section
    assert "fusion: attention" in page and "largest gap" in page
    assert len(re.findall(r'<img alt="[^"]*" src="data:image/png;base64,', page)) >= 12


def test_values_from_the_data_cannot_add_a_script(full_model, shapes, tmp_path):
    """Group names and text come from the table: markup in them is shown, never run."""
    model, folder = full_model
    frame = pd.read_csv(shapes)
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    frame.loc[::3, "colour"] = hostile
    frame.loc[0, "comment"] = hostile
    frame.to_csv(shapes.parent / "hostile.csv", index=False)
    options = ReportOptions(rows=[0], robustness=False, group_by=["colour"])
    page = build_report(model, folder, shapes.parent / "hostile.csv", options)
    assert "Metrics by colour" in page and html.escape(hostile) in page
    assert not scripts(page) and not EXTERNAL.search(page)


def test_report_without_data_has_no_data_sections(full_model):
    model, folder = full_model
    page = build_report(model, folder)
    assert "<h2>Training" in page and "<h2>Metrics: valid" in page
    assert "Modality contributions" not in page and "<h2>Robustness" not in page


def chromium_driver(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM.is_file() and CHROMEDRIVER.is_file(), "Chromium is needed for this test"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        f"--user-data-dir={profile}", "--window-size=1280,1000",
    ):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def test_report_renders_in_headless_chromium(report_file):
    profile = tempfile.mkdtemp(prefix="polymodal-chromium-")
    driver = chromium_driver(profile)
    try:
        driver.get(report_file.resolve().as_uri())
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0);"
        )
        alts = driver.execute_script("return Array.from(document.images).map(i => i.alt);")
        height = driver.execute_script("return document.body.scrollHeight;")
        driver.set_window_size(1280, min(int(height) + 100, 12000))
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    assert len(widths) >= 12 and all(width > 0 for width in widths), widths
    for expected in ("training curves", "modality contributions", "robustness curves"):
        assert expected in alts, alts
    assert any(alt.startswith("confusion matrix") for alt in alts)
    assert any(alt.startswith("attributions for row0_picture") for alt in alts)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert pixels.shape[0] > 2000, "the whole page was captured"
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 60).mean() > 0.01, "coloured plots are visible, the page is not blank"
    colours = (pixels[..., 0].astype(np.int32) << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    assert len(np.unique(colours)) > 500, "antialiased plots, not a flat page"


def test_train_writes_the_report_by_default(shapes, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model: {dim: 32, layers: 1, heads: 2}\ntrain: {max_epochs: 1, batch_size: 16}\n"
        "preprocess: {audio: {n_mels: 32}, image: {size: 16}}\n"
    )
    out = tmp_path / "m"
    args = ["train", str(shapes), "--target", "label", "--config", str(config), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert "report written to" in result.output and not EXTERNAL.search(page)
    assert not scripts(page)
    assert "<h2>Modality contributions" in page and "the valid rows" in page
    assert "<h2>Robustness" not in page, "training skips the slow sweeps"
    report = CliRunner().invoke(app, ["report", str(out), str(shapes), "--no-adversarial"])
    assert report.exit_code == 0, report.output
    assert "<h2>Robustness" in (out / "report.html").read_text()
