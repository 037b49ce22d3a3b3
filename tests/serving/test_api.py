"""The HTTP API in-process (TestClient): predictions equal Model.predict, and hardening."""

from __future__ import annotations

import asyncio
import base64
import stat
import struct
import threading
import time
import zlib
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

import polymodal.modalities.image.preprocess
from polymodal.data.table import Table
from polymodal.model import Model
from polymodal.serving.app import create_app
from polymodal.serving.settings import ServeSettings
from tests.serving.conftest import LiveServer

INPUTS = ["picture", "sound", "comment", "size", "colour", "score"]
FILES = {"picture", "sound"}


def client_for(trained, **options) -> TestClient:
    return TestClient(create_app(ServeSettings(model_dir=trained.model_dir, **options)))


@pytest.fixture(scope="module")
def client(trained):
    with client_for(trained) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def frame(trained) -> pd.DataFrame:
    return pd.read_csv(trained.data)


def expected(trained, frame: pd.DataFrame, rows: list[int]) -> pd.DataFrame:
    model = Model.load(trained.model_dir)
    table = Table(frame.iloc[rows][INPUTS].reset_index(drop=True), trained.folder, "expected")
    return model.predict(table)


def multipart(trained, record: pd.Series) -> tuple[dict, dict]:
    files = {c: (f"upload-{c}", (trained.folder / record[c]).read_bytes()) for c in FILES}
    fields = {
        c: repr(float(record[c])) if isinstance(record[c], float) else record[c] for c in INPUTS
    }
    return files, {c: v for c, v in fields.items() if c not in FILES}


def json_row(trained, record: pd.Series) -> dict:
    row = {c: record[c].item() if hasattr(record[c], "item") else record[c] for c in INPUTS}
    for column in FILES:
        data = (trained.folder / record[column]).read_bytes()
        row[column] = {"base64": base64.b64encode(data).decode()}
    return row


def assert_matches(predictions: list[dict], reference: pd.DataFrame) -> None:
    assert len(predictions) == len(reference)
    for row, prediction in enumerate(predictions):
        label = prediction["label"]
        assert label["predicted"] == reference.loc[row, "label_predicted"]
        for name, probability in label["probabilities"].items():
            assert abs(probability - reference.loc[row, f"label_prob_{name}"]) < 1e-6


def test_multipart_prediction_equals_model_predict(client, trained, frame):
    files, fields = multipart(trained, frame.iloc[3])
    response = client.post("/v1/predict", files=files, data=fields)
    assert response.status_code == 200, response.text
    assert_matches(response.json()["predictions"], expected(trained, frame, [3]))


def test_json_rows_equal_model_predict(client, trained, frame):
    rows = [0, 5, 6, 11]
    body = {"rows": [json_row(trained, frame.iloc[i]) for i in rows]}
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 200, response.text
    assert_matches(response.json()["predictions"], expected(trained, frame, rows))
    one = client.post("/v1/predict", json=json_row(trained, frame.iloc[5]))
    assert_matches(one.json()["predictions"], expected(trained, frame, [5]))


def test_multipart_list_of_rows_and_missing_inputs(client, trained, frame):
    picture = (trained.folder / frame.loc[2, "picture"]).read_bytes()
    files = {"rows[0][picture]": ("a", picture)}
    data = {"rows[1][comment]": "sample number 4 looks odd", "rows[1][colour]": "blue"}
    response = client.post("/v1/predict", files=files, data=data)
    assert response.status_code == 200, response.text
    reference = frame.iloc[[2, 4]][INPUTS].copy().astype(object).reset_index(drop=True)
    reference.loc[0, [c for c in INPUTS if c != "picture"]] = None
    reference.loc[1, INPUTS] = [None, None, "sample number 4 looks odd", None, "blue", None]
    model = Model.load(trained.model_dir)
    assert_matches(response.json()["predictions"], model.predict(Table(reference, trained.folder)))


def test_schema_lists_inputs_kinds_file_types_targets(client):
    schema = client.get("/v1/schema").json()
    kinds = {field["name"]: field["kind"] for field in schema["inputs"]}
    assert kinds == {
        "picture": "image", "sound": "audio", "comment": "text",
        "size": "number", "colour": "category", "score": "number",
    }  # fmt: skip
    picture = next(f for f in schema["inputs"] if f["name"] == "picture")
    assert picture["file"] and "PNG" in picture["formats"] and picture["accept"] == "image/*"
    colour = next(f for f in schema["inputs"] if f["name"] == "colour")
    assert colour["categories"] == ["blue", "green", "red"]
    assert schema["targets"][0]["column"] == "label"
    assert len(schema["targets"][0]["classes"]) == 4
    assert schema["targets"][0]["text"] is False  # a class name, not generated text
    assert client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["requestBody"]
    assert client.get("/docs").status_code == 200


def test_health_and_page(client):
    assert client.get("/health").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and 'id="predict-button"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200


def test_wrong_file_type_is_told_from_content_not_name(client, trained, frame):
    wav = (trained.folder / frame.loc[0, "sound"]).read_bytes()
    png = (trained.folder / frame.loc[0, "picture"]).read_bytes()
    refused = client.post(
        "/v1/predict", files={"picture": ("photo.png", wav, "image/png")}
    )  # a WAV named and declared as PNG
    assert refused.status_code == 415
    assert refused.json()["column"] == "picture" and "audio" in refused.json()["error"]
    accepted = client.post("/v1/predict", files={"picture": ("sound.wav", png, "audio/wav")})
    assert accepted.status_code == 200, accepted.text
    garbage = client.post(
        "/v1/predict", files={"sound": ("x.wav", b"RIFF\x00\x00\x00\x00WAVEjunk")}
    )
    assert garbage.status_code == 422 and garbage.json()["column"] == "sound"


def test_path_strings_are_refused_for_file_columns(client, trained, frame):
    path = str(trained.folder / frame.loc[0, "picture"])  # a real file on the server
    for body in (
        {"picture": path},
        {"picture": frame.loc[0, "picture"]},
        {"rows": [{"sound": path}]},
    ):
        response = client.post("/v1/predict", json=body)
        assert response.status_code == 422, response.text
        assert "path" in response.json()["error"]
    response = client.post("/v1/predict", data={"picture": path})  # a form field, not a file
    assert response.status_code == 422 and response.json()["column"] == "picture"
    data_url = "data:image/png;base64," + base64.b64encode(open(path, "rb").read()).decode()
    assert client.post("/v1/predict", json={"picture": data_url}).status_code == 200


def test_bad_requests_get_json_errors(client):
    cases = [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
        ({"json": {"nonsense": 1}}, 422),
        ({"json": {"size": [1, 2]}}, 422),
        ({"json": {"size": "abc"}}, 422),
        ({"json": {"comment": {"base64": "aGk="}}}, 422),
        ({"json": {"picture": {"base64": "not base64!"}}}, 422),
        ({"json": {}}, 422),
        ({"json": {"rows": []}}, 422),
        ({"content": b"x", "headers": {"content-type": "text/plain"}}, 415),
        ({"content": b"--b\r\ntruncated", "headers": {"content-type": "multipart/form-data"}}, 400),
    ]
    for request, status in cases:
        response = client.post("/v1/predict", **request)
        assert response.status_code == status, (request, response.text)
        assert response.json()["error"] and "Traceback" not in response.text
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    assert client.get("/v1/predict").status_code == 405


def test_unknown_category_is_a_warning(client):
    response = client.post("/v1/predict", json={"colour": "magenta", "size": 0.5})
    assert response.status_code == 200
    assert response.json()["warnings"][0]["column"] == "colour"


def test_api_key(trained):
    with client_for(trained, api_key="s3cret") as client:
        assert client.get("/health").status_code == 200  # open
        for headers in ({}, {"X-API-Key": "wrong"}):
            response = client.post("/v1/predict", json={"size": 1.0}, headers=headers)
            assert response.status_code == 401 and "X-API-Key" in response.json()["error"]
            assert client.get("/v1/schema", headers=headers).status_code == 401
            assert client.get("/metrics", headers=headers).status_code == 401
        good = {"X-API-Key": "s3cret"}
        assert client.post("/v1/predict", json={"size": 1.0}, headers=good).status_code == 200
        assert client.get("/v1/schema", headers=good).json()["api_key_required"] is True


def test_request_size_limit(trained):
    with client_for(trained, max_request_mb=0.05) as client:
        big = b"\x89PNG" + b"\0" * 100_000
        response = client.post("/v1/predict", files={"picture": ("p.png", big)})
        assert response.status_code == 413 and "too large" in response.json()["error"]
        payload = {"comment": "x" * 100_000}
        assert client.post("/v1/predict", json=payload).status_code == 413

        def chunks():  # no Content-Length: the limit applies while the body streams in
            for _ in range(20):
                yield b"a" * 10_000

        streamed = client.post(
            "/v1/predict", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413 and "too large" in streamed.json()["error"]


def test_too_many_rows(trained):
    with client_for(trained, max_rows=2) as client:
        response = client.post("/v1/predict", json={"rows": [{"size": 1.0}] * 3})
        assert response.status_code == 413 and "at most 2" in response.json()["error"]


def test_decoding_has_a_time_limit(trained, frame, monkeypatch):
    real = polymodal.modalities.image.preprocess.decode_image

    def slow(*args, **kwargs):
        time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(polymodal.modalities.image.preprocess, "decode_image", slow)
    png = (trained.folder / frame.loc[0, "picture"]).read_bytes()
    with client_for(trained, decode_timeout_s=0.3) as client:
        response = client.post("/v1/predict", files={"picture": ("p", png)})
    assert response.status_code == 422 and "longer than 0.3 s" in response.json()["error"]


def test_cors_is_off_unless_asked(client, trained):
    headers = {"Origin": "http://example.org", "Access-Control-Request-Method": "POST"}
    assert (
        "access-control-allow-origin" not in client.options("/v1/predict", headers=headers).headers
    )
    with client_for(trained, cors_origins=["http://example.org"]) as allowed:
        response = allowed.options("/v1/predict", headers=headers)
        assert response.headers["access-control-allow-origin"] == "http://example.org"


def test_metrics_count_requests_latency_and_batches(client):
    client.post("/v1/predict", json={"size": 1.0})
    client.post("/v1/predict", json={"nonsense": 1})
    text = client.get("/metrics").text
    assert 'polymodal_requests_total{method="POST",route="/v1/predict",status="200"}' in text
    assert 'polymodal_requests_total{method="POST",route="/v1/predict",status="422"}' in text
    assert "polymodal_request_seconds_bucket" in text
    assert "polymodal_batch_rows_count" in text


def test_explain_gives_exact_shapley_values(client, trained, frame):
    body = {"rows": [json_row(trained, frame.iloc[i]) for i in (1, 2)]}
    response = client.post("/v1/explain", json=body)
    assert response.status_code == 200, response.text
    reference = expected(trained, frame, [1, 2])
    for row, explanation in enumerate(response.json()["explanations"]):
        label = explanation["label"]
        assert set(label["contributions"]) == set(INPUTS)
        assert label["predicted"] == reference.loc[row, "label_predicted"]
        probability = reference.loc[row, f"label_prob_{label['predicted']}"]
        assert abs(label["value"] - probability) < 1e-5
        total = sum(label["contributions"].values())  # efficiency: shares add up
        assert abs(total - (label["value"] - label["base"])) < 1e-5


async def send_together(url: str, requests: list[dict]) -> list:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(client.post("/v1/predict", **r) for r in requests))


def test_concurrent_requests_are_batched_and_a_bad_one_fails_alone(trained, frame):
    rows = [0, 1, 2, 3]
    good = [{"json": json_row(trained, frame.iloc[i])} for i in rows]
    broken = {"files": {"picture": ("p", b"\x89PNG\r\n\x1a\n" + b"\0" * 50)}}
    settings = ServeSettings(model_dir=trained.model_dir, max_wait_ms=500)
    with LiveServer(settings) as server:
        responses = asyncio.run(send_together(server.url, [*good, broken]))
        metrics = httpx.get(server.url + "/metrics").text
    reference = expected(trained, frame, rows)
    for index, response in enumerate(responses[:4]):
        assert response.status_code == 200, response.text
        assert_matches(
            response.json()["predictions"], reference.iloc[[index]].reset_index(drop=True)
        )
    assert responses[4].status_code == 422 and responses[4].json()["column"] == "picture"
    count = float(metrics.split("polymodal_batch_rows_count ")[1].split()[0])
    total = float(metrics.split("polymodal_batch_rows_sum ")[1].split()[0])
    assert count < total  # some forward pass ran several requests' rows at once


def test_a_slow_file_fails_only_its_own_request(trained, frame, monkeypatch):
    real = polymodal.modalities.image.preprocess.decode_image

    def slow_if_marked(data, *args, **kwargs):
        if data.endswith(b"SLOW"):
            time.sleep(2.5)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(polymodal.modalities.image.preprocess, "decode_image", slow_if_marked)
    png = (trained.folder / frame.loc[0, "picture"]).read_bytes()
    slow = {"files": {"picture": ("p", png + b"SLOW")}}  # bytes after IEND: still a PNG
    quick = [{"json": json_row(trained, frame.iloc[i])} for i in (1, 2)]
    settings = ServeSettings(model_dir=trained.model_dir, max_wait_ms=500, decode_timeout_s=1.0)
    with LiveServer(settings) as server:
        responses = asyncio.run(send_together(server.url, [slow, *quick]))
    assert responses[0].status_code == 422 and "longer than 1 s" in responses[0].json()["error"]
    assert [r.status_code for r in responses[1:]] == [200, 200]


def test_uploads_live_in_a_private_folder_only_for_their_request(trained, frame, monkeypatch):
    """README, Hardening: uploads are written into a private temporary folder (mode 0700)
    under names the server picks, and removed after the request."""
    seen = []
    encode = Model.encode

    def looking(self, data, log=None):
        folder = Path(data.base_dir)
        mode = stat.S_IMODE(folder.stat().st_mode)
        seen.append((folder, mode, sorted(p.name for p in folder.iterdir())))
        return encode(self, data, log)

    monkeypatch.setattr(Model, "encode", looking)
    with client_for(trained) as client:
        root = client.app.state.service.folder
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        files, fields = multipart(trained, frame.iloc[3])
        assert client.post("/v1/predict", files=files, data=fields).status_code == 200
        assert client.post("/v1/predict", json=json_row(trained, frame.iloc[4])).status_code == 200
        assert len(seen) == 2
        for folder, mode, names in seen:
            assert folder.parent == root and mode == 0o700
            assert len(names) == 2 and not any("upload" in name for name in names), names
            assert not folder.exists(), "removed once the request was decoded"
        assert list(root.iterdir()) == []
    assert not root.exists(), "and the server's own folder once it stops"


def png_header_claiming(width: int, height: int) -> bytes:
    """A small PNG file whose header claims a huge grey image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_guard_refuses_a_huge_claimed_image(client):
    """README: Pillow's decompression-bomb guard is on. A 30000 x 30000 header (900 M pixels)
    is refused before anything that size is allocated."""
    bomb = png_header_claiming(30000, 30000)
    assert len(bomb) < 200
    started = time.perf_counter()
    response = client.post("/v1/predict", files={"picture": ("p.png", bomb)})
    assert response.status_code == 422, response.text
    assert response.json()["column"] == "picture"
    assert "decompression-bomb" in response.json()["error"]
    assert time.perf_counter() - started < 10


def test_a_busy_decode_pool_is_a_503(trained):
    """README: decoding gives up after --decode-timeout seconds, with a 503 when the pool is
    too busy to start (and a 422 when the decoding itself is too slow, test above)."""
    with client_for(trained, decode_timeout_s=0.5) as client:
        service = client.app.state.service
        release = threading.Event()
        for _ in range(service.settings.decode_threads):  # every decode thread is taken
            service.decoders.submit(release.wait, 30)
        try:
            response = client.post("/v1/predict", json={"size": 1.0})
        finally:
            release.set()
        assert response.status_code == 503, response.text
        assert "busy" in response.json()["error"]
        assert client.post("/v1/predict", json={"size": 1.0}).status_code == 200
