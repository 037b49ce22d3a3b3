"""The web page in real headless Chromium: upload an image and a sound, predict, see it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from polymodal.data.table import Table
from polymodal.model import Model

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--no-first-run",
    "--window-size=1200,900",
]  # fmt: skip


def chromium(profile: str) -> webdriver.Chrome:
    # No skip: without Chromium this test fails, naming what to install.
    assert CHROMIUM.exists() and DRIVER.exists(), "install Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(str(DRIVER)))


def test_page_uploads_image_and_audio_and_shows_the_prediction(live_server, trained):
    frame = pd.read_csv(trained.data)
    picture = trained.folder / frame.loc[6, "picture"]
    sound = trained.folder / frame.loc[6, "sound"]
    only_files = pd.DataFrame(
        {"picture": [frame.loc[6, "picture"]], "sound": [frame.loc[6, "sound"]]}
        | {c: [None] for c in ("comment", "size", "colour", "score")}
    )
    expected = Model.load(trained.model_dir).predict(Table(only_files, trained.folder))
    ARTIFACTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="polymodal-chromium-") as profile:
        browser = chromium(profile)
        try:
            browser.get(live_server.url + "/")
            wait = WebDriverWait(browser, 30)
            wait.until(ready.element_to_be_clickable((By.ID, "predict-button")))
            browser.find_element(
                By.CSS_SELECTOR, 'input[type=file][data-column="picture"]'
            ).send_keys(str(picture))
            browser.find_element(
                By.CSS_SELECTOR, 'input[type=file][data-column="sound"]'
            ).send_keys(str(sound))
            select = browser.find_element(By.CSS_SELECTOR, 'select[data-column="colour"]')
            assert [o.text for o in select.find_elements(By.TAG_NAME, "option")][1:] == [
                "blue",
                "green",
                "red",
            ]
            browser.find_element(By.ID, "predict-button").click()
            wait.until(
                lambda b: b.find_element(By.ID, "result").get_attribute("data-state") == "done"
            )
            predicted = browser.find_element(
                By.CSS_SELECTOR, '#result .predicted[data-target="label"]'
            )
            assert predicted.text == expected.loc[0, "label_predicted"]
            bars = browser.find_elements(By.CSS_SELECTOR, "#result .bars .bar")
            assert len(bars) == 4  # one per class
            assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
            browser.find_element(By.ID, "explain-button").click()
            wait.until(ready.visibility_of_element_located((By.ID, "explanation")))
            browser.execute_script("window.scrollTo(0, 0)")
            browser.save_screenshot(str(ARTIFACTS / "serving-page.png"))
        finally:
            browser.quit()
    assert (ARTIFACTS / "serving-page.png").stat().st_size > 1000
