"""The web page in real headless Chromium: upload an image and a sound, predict, see it;
generate images from a label and see them load."""

from __future__ import annotations

import pandas as pd
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import Select, WebDriverWait

from polymodal.data.table import Table
from polymodal.model import Model
from polymodal.serving.settings import ServeSettings
from tests.serving.conftest import ARTIFACTS, LiveServer, chromium


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
        assert not browser.find_element(By.ID, "generate-button").is_displayed()  # no image target
        browser.find_element(By.ID, "explain-button").click()
        wait.until(ready.visibility_of_element_located((By.ID, "explanation")))
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(ARTIFACTS / "serving-page.png"))
    assert (ARTIFACTS / "serving-page.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def live_image_server(image_trained):
    with LiveServer(ServeSettings(model_dir=image_trained.model_dir)) as server:
        yield server


def loaded_width(browser, image) -> int:
    """An <img>'s natural width once the browser has decoded it (0 before, or if it failed)."""
    return browser.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", image
    )


def test_page_generates_images_for_the_label_chosen(live_image_server):
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as browser:
        browser.get(live_image_server.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(ready.element_to_be_clickable((By.ID, "generate-button")))
        Select(
            browser.find_element(By.CSS_SELECTOR, 'select[data-column="label"]')
        ).select_by_value("shape2")
        samples = browser.find_element(By.ID, "generate-samples")
        samples.clear()
        samples.send_keys("2")
        browser.find_element(By.ID, "generate-seed").send_keys("5")
        browser.find_element(By.ID, "generate-button").click()
        wait.until(lambda b: b.find_element(By.ID, "result").get_attribute("data-state") == "done")
        images = browser.find_elements(
            By.CSS_SELECTOR, '#result .samples figure[data-target="image"] img'
        )
        assert len(images) == 2
        wait.until(lambda b: all(loaded_width(b, image) for image in images))
        assert [loaded_width(browser, image) for image in images] == [16, 16]  # the bars' side
        settings = browser.find_element(By.CSS_SELECTOR, "#result .generate-settings").text
        assert "seed 5" in settings and "steps 3" in settings
        assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
        browser.save_screenshot(str(ARTIFACTS / "serving-generate.png"))
        browser.find_element(By.ID, "predict-button").click()  # a prediction's image shows too
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#result .media img"))
        image = browser.find_element(By.CSS_SELECTOR, '#result .media[data-target="image"] img')
        wait.until(lambda b: loaded_width(b, image))
