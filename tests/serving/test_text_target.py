"""A text target served: /v1/predict returns the transcript the model writes for an uploaded
WAV, and the page shows it, reads it aloud, and turns a microphone recording straight into one
(headless Chromium with its fake microphone)."""

from __future__ import annotations

import base64
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from polymodal.config import TargetConfig
from polymodal.data.cache import FeatureCache
from polymodal.data.table import Table
from polymodal.model import Model
from polymodal.serving.app import create_app
from polymodal.serving.settings import ServeSettings
from tests.media import spoken_tones, tiny_config
from tests.serving.conftest import ARTIFACTS, LiveServer, chromium

FAKE_MICROPHONE = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")
ROWS = [0, 5, 7]


@dataclass
class Spoken:
    data: Path  # the CSV: `sound` (a WAV of two tones) → `text` ("low high")
    greedy: Path  # the model as trained: greedy decoding
    nbest: Path  # the same weights saved with beam 3, n-best 3

    @property
    def folder(self) -> Path:
        return self.data.parent

    def sound(self, row: int) -> Path:
        return self.folder / pd.read_csv(self.data).loc[row, "sound"]

    def expected(self, model_dir: Path, rows: list[int]) -> pd.DataFrame:
        frame = pd.read_csv(self.data).iloc[rows][["sound"]].reset_index(drop=True)
        return Model.load(model_dir).predict(Table(frame, self.folder, "expected"))


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> Spoken:
    root = tmp_path_factory.mktemp("spoken")
    data = spoken_tones(root / "data")
    config = tiny_config(max_epochs=12, batch_size=8, lr=1e-2, patience=50)
    config.targets = [TargetConfig(column="text", task="text")]
    model = Model(config=config, cache=FeatureCache(root / "cache"))
    model.fit(data, out=root / "greedy")
    model.set_decoding(beam=3, nbest=3).save(root / "nbest")
    return Spoken(data, root / "greedy", root / "nbest")


@pytest.fixture(scope="module")
def live_text_server(spoken):
    with LiveServer(ServeSettings(model_dir=spoken.nbest)) as server:
        yield server


def test_predict_returns_the_transcript_of_an_uploaded_wav(spoken):
    reference = spoken.expected(spoken.greedy, ROWS)
    with TestClient(create_app(ServeSettings(model_dir=spoken.greedy))) as client:
        answers = []
        for row in ROWS:  # multipart: the WAV as an upload
            upload = {"sound": ("question.wav", spoken.sound(row).read_bytes(), "audio/wav")}
            response = client.post("/v1/predict", files=upload)
            assert response.status_code == 200, response.text
            answers.append(response.json()["predictions"][0]["text"])
        files = [base64.b64encode(spoken.sound(row).read_bytes()).decode() for row in ROWS]
        response = client.post(
            "/v1/predict", json={"rows": [{"sound": {"base64": f}} for f in files]}
        )
        assert response.status_code == 200, response.text
        in_json = [prediction["text"] for prediction in response.json()["predictions"]]
    for index, answer in enumerate(answers):
        assert isinstance(answer["predicted"], str)
        assert answer["predicted"] == reference.loc[index, "text_predicted"]
        assert isinstance(answer["log_probability"], float)
        assert math.isclose(
            answer["log_probability"], reference.loc[index, "text_log_probability"], abs_tol=1e-4
        )
        assert answer["nbest"] is None
        assert in_json[index]["predicted"] == answer["predicted"]
    assert any(answer["predicted"].strip() for answer in answers)  # the model learned to write


def test_schema_marks_the_text_target_and_predict_gives_the_nbest_list(spoken):
    reference = spoken.expected(spoken.nbest, ROWS[:1])
    with TestClient(create_app(ServeSettings(model_dir=spoken.nbest))) as client:
        schema = client.get("/v1/schema").json()
        assert schema["targets"] == [
            {"column": "text", "task": "text", "classes": [], "text": True, "generates": None}
        ]
        document = client.get("/openapi.json").json()
        assert "text" in document["components"]["schemas"]["TargetInfo"]["properties"]
        assert client.get("/docs").status_code == 200
        upload = {"sound": ("q.wav", spoken.sound(ROWS[0]).read_bytes(), "audio/wav")}
        response = client.post("/v1/predict", files=upload)
        explained = client.post("/v1/explain", files=upload)
    assert response.status_code == 200, response.text
    answer = response.json()["predictions"][0]["text"]
    assert explained.status_code == 200, explained.text
    assert explained.json()["explanations"][0]["text"]["predicted"] == answer["predicted"]
    assert answer["predicted"] == reference.loc[0, "text_predicted"]
    assert answer["nbest"] == json.loads(reference.loc[0, "text_nbest"])
    assert len(answer["nbest"]) == 3 and answer["nbest"][0]["text"] == answer["predicted"]


def wait_for_result(browser) -> None:
    WebDriverWait(browser, 30).until(
        lambda b: (
            b.find_element(By.ID, "result").get_attribute("data-state") == "done"
            or b.find_element(By.ID, "error").get_attribute("hidden") is None
        )
    )
    error = browser.find_element(By.ID, "error")
    assert error.get_attribute("hidden") is not None, error.text


STUB_SPEECH = """
window.spoken = [];
window.speechSynthesis.speak = (utterance) => window.spoken.push(utterance.text);
"""


def test_page_shows_the_transcript_of_an_uploaded_wav_and_reads_it_aloud(live_text_server, spoken):
    reference = spoken.expected(spoken.nbest, ROWS[1:2])
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as browser:
        browser.get(live_text_server.url + "/")
        WebDriverWait(browser, 30).until(ready.element_to_be_clickable((By.ID, "predict-button")))
        browser.find_element(By.CSS_SELECTOR, 'input[type=file][data-column="sound"]').send_keys(
            str(spoken.sound(ROWS[1]))
        )
        browser.find_element(By.ID, "predict-button").click()
        wait_for_result(browser)
        shown = browser.find_element(By.CSS_SELECTOR, '#result .predicted[data-target="text"]')
        transcript = reference.loc[0, "text_predicted"]
        assert shown.text == transcript
        score = browser.find_element(By.CSS_SELECTOR, "#result .log-probability").text
        assert f"{reference.loc[0, 'text_log_probability']:.3f}" in score
        hypotheses = json.loads(reference.loc[0, "text_nbest"])
        listed = browser.find_elements(By.CSS_SELECTOR, "#result .nbest li")
        assert len(listed) == len(hypotheses) == 3
        browser.find_element(By.CSS_SELECTOR, "#result .nbest summary").click()
        texts = [item.find_element(By.CLASS_NAME, "nbest-text").text for item in listed]
        assert texts == [h["text"] or "(no text)" for h in hypotheses]
        assert browser.find_elements(By.CSS_SELECTOR, "#result .bars") == []
        browser.execute_script(STUB_SPEECH)
        button = browser.find_element(By.CSS_SELECTOR, '#result button.speak[data-target="text"]')
        assert button.text == "Read aloud" and button.is_enabled() == bool(transcript)
        button.click()
        assert browser.execute_script("return window.spoken") == [transcript]
        browser.save_screenshot(str(ARTIFACTS / "serving-page-text.png"))
    assert (ARTIFACTS / "serving-page-text.png").stat().st_size > 1000


WATCH_REQUESTS = """
window.requests = [];
const original = window.fetch;
window.fetch = async (url, options = {}) => {
  const body = options.body instanceof FormData ? options.body : null;
  const file = body ? body.get("sound") : null;
  const response = await original(url, options);
  window.requests.push({url: String(url), status: response.status, type: file ? file.type : null});
  return response;
};
"""


def test_a_microphone_recording_goes_straight_to_a_transcript(live_text_server):
    """Record, Stop: the page converts the recording to WAV and predicts without Predict."""
    with chromium(*FAKE_MICROPHONE) as browser:
        browser.get(live_text_server.url + "/")
        WebDriverWait(browser, 30).until(ready.element_to_be_clickable((By.ID, "predict-button")))
        browser.execute_script(WATCH_REQUESTS)
        record = browser.find_element(By.CSS_SELECTOR, "button.record")
        assert record.text == "Record"
        record.click()
        WebDriverWait(browser, 10).until(lambda _: record.text == "Stop")
        time.sleep(1.0)
        record.click()
        wait_for_result(browser)
        requests = browser.execute_script("return window.requests")
        assert [(r["url"], r["status"], r["type"]) for r in requests] == [
            ("/v1/predict", 200, "audio/wav")
        ]
        shown = browser.find_element(By.CSS_SELECTOR, '#result .predicted[data-target="text"]')
        assert shown.get_attribute("id") == "predicted-0"
        assert browser.find_element(By.CSS_SELECTOR, "#result button.speak")
        assert browser.find_element(By.CSS_SELECTOR, ".preview audio")
        browser.save_screenshot(str(ARTIFACTS / "serving-page-microphone.png"))


RECORD_AND_POST = """
const done = arguments[arguments.length - 1];
(async () => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const recorder = new MediaRecorder(stream);
  const chunks = [];
  recorder.ondataavailable = (event) => chunks.push(event.data);
  const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
  recorder.start();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  recorder.stop();
  await stopped;
  stream.getTracks().forEach((track) => track.stop());
  const blob = new Blob(chunks, {type: chunks[0].type});
  const form = new FormData();
  form.append("sound", blob, "recording.webm");
  const response = await fetch("/v1/predict", {method: "POST", body: form});
  done({type: blob.type, size: blob.size, status: response.status, body: await response.json()});
})().catch((error) => done({error: String(error)}));
"""


def test_the_server_decodes_what_mediarecorder_records(live_text_server):
    """The page's fallback when the browser cannot decode its own recording: the raw WebM/Opus
    (Ogg in some browsers) blob is posted as it is, and the server decodes it with PyAV."""
    with chromium(*FAKE_MICROPHONE) as browser:
        browser.get(live_text_server.url + "/")
        browser.set_script_timeout(30)
        result = browser.execute_async_script(RECORD_AND_POST)
    assert "error" not in result, result
    assert result["type"].startswith(("audio/webm", "audio/ogg")) and result["size"] > 1000
    assert result["status"] == 200, result["body"]
    assert isinstance(result["body"]["predictions"][0]["text"]["predicted"], str)
