"""The page's search panel in real headless Chromium: a typed text and an uploaded image come
back as cards with the stored images, fetched by id."""

from __future__ import annotations

import pandas as pd
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import Select, WebDriverWait

from polymodal.serving.settings import ServeSettings
from tests.serving.conftest import ARTIFACTS, LiveServer, chromium


@pytest.fixture(scope="module")
def search_server(indexed):
    settings = ServeSettings(model_dir=indexed.model_dir, index_dir=indexed.image_db)
    with LiveServer(settings) as server:
        yield server


def searched(browser, wait) -> list:
    browser.find_element(By.ID, "search-button").click()
    wait.until(
        lambda b: (
            b.find_element(By.ID, "search-results").get_attribute("data-state") in ("done", "error")
        )
    )
    assert browser.find_element(By.ID, "search-error").get_attribute("hidden") is not None
    return browser.find_elements(By.CSS_SELECTOR, "#search-results .hit")


def test_search_panel_shows_hits_as_cards(search_server, indexed):
    frame = pd.read_csv(indexed.data)
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as browser:
        browser.get(search_server.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(ready.visibility_of_element_located((By.ID, "search-section")))
        assert "24 vectors of image" in browser.find_element(By.ID, "search-summary").text
        assert not browser.find_element(By.ID, "search-by-class").is_displayed()  # no classes
        assert not browser.find_element(By.ID, "generate-options").is_displayed()  # generates none

        browser.find_element(By.ID, "search-text").send_keys(frame.loc[3, "note"])
        Select(browser.find_element(By.ID, "search-k")).select_by_visible_text("5")
        cards = searched(browser, wait)
        assert len(cards) == 5
        assert [c.get_attribute("data-rank") for c in cards] == ["1", "2", "3", "4", "5"]

        picture = indexed.folder / frame.loc[11, "image"]
        browser.find_element(By.ID, "search-file").send_keys(str(picture))
        assert browser.find_element(By.ID, "search-text").get_attribute("value") == ""
        cards = searched(browser, wait)
        first = cards[0]
        assert "score 1.0000" in first.text or "score 0.9999" in first.text
        assert "images/0011.png" in first.text
        image = first.find_element(By.TAG_NAME, "img")
        wait.until(
            lambda _: browser.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", image
            )
        )
        assert browser.execute_script("return arguments[0].naturalWidth", image) == 64

        browser.find_element(By.ID, "search-file").clear()
        browser.find_element(By.ID, "search-button").click()
        wait.until(lambda b: b.find_element(By.ID, "search-error").get_attribute("hidden") is None)
        assert "Type a text or choose a file" in browser.find_element(By.ID, "search-error").text
        browser.find_element(By.ID, "search-text").send_keys(frame.loc[11, "note"])
        searched(browser, wait)
        section = browser.find_element(By.ID, "search-section")
        browser.execute_script("arguments[0].scrollIntoView()", section)
        browser.save_screenshot(str(ARTIFACTS / "serving-search.png"))
    assert (ARTIFACTS / "serving-search.png").stat().st_size > 1000
