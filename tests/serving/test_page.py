"""The web page in real headless Chromium: upload an image and a sound, predict, see it."""

from __future__ import annotations

import pandas as pd
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from polymodal.data.table import Table
from polymodal.model import Model
from tests.serving.conftest import ARTIFACTS, chromium


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
    with chromium() as browser:
        browser.get(live_server.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(ready.element_to_be_clickable((By.ID, "predict-button")))
        browser.find_element(By.CSS_SELECTOR, 'input[type=file][data-column="picture"]').send_keys(
            str(picture)
        )
        browser.find_element(By.CSS_SELECTOR, 'input[type=file][data-column="sound"]').send_keys(
            str(sound)
        )
        select = browser.find_element(By.CSS_SELECTOR, 'select[data-column="colour"]')
        assert [o.text for o in select.find_elements(By.TAG_NAME, "option")][1:] == [
            "blue",
            "green",
            "red",
        ]
        browser.find_element(By.ID, "predict-button").click()
        wait.until(lambda b: b.find_element(By.ID, "result").get_attribute("data-state") == "done")
        predicted = browser.find_element(By.CSS_SELECTOR, '#result .predicted[data-target="label"]')
        assert predicted.text == expected.loc[0, "label_predicted"]
        bars = browser.find_elements(By.CSS_SELECTOR, "#result .bars .bar")
        assert len(bars) == 4  # one per class
        assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
        browser.find_element(By.ID, "explain-button").click()
        wait.until(ready.visibility_of_element_located((By.ID, "explanation")))
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(ARTIFACTS / "serving-page.png"))
    assert (ARTIFACTS / "serving-page.png").stat().st_size > 1000
