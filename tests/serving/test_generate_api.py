"""POST /v1/generate in-process (TestClient): a PNG carrying its provenance mark, samples in
JSON, seeded repeats, request settings that never leak into other requests, and refusals."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from polymodal.serving.app import create_app
from polymodal.serving.settings import ServeSettings
from polymodal.tasks.image.provenance import MARK

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URL = "data:image/png;base64,"


@pytest.fixture(scope="module")
def client(image_trained):
    with TestClient(create_app(ServeSettings(model_dir=image_trained.model_dir))) as test_client:
        yield test_client


def png_of(url: str) -> bytes:
    assert url.startswith(DATA_URL)
    return base64.b64decode(url[len(DATA_URL) :])


def mark_of(data: bytes) -> dict:
    with Image.open(io.BytesIO(data)) as image:
        return json.loads(image.info[MARK])


def test_format_png_returns_one_marked_png(client):
    response = client.post("/v1/generate?format=png", json={"label": "shape2", "seed": 4})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG_SIGNATURE)
    mark = mark_of(response.content)
    assert mark["generated"] and mark["column"] == "image" and mark["model"] == "model"
    assert (mark["seed"], mark["steps"], mark["guidance"]) == (4, 3, 2.0)
    accepted = client.post(
        "/v1/generate", json={"label": "shape2", "seed": 4}, headers={"Accept": "image/png"}
    )
    assert accepted.headers["content-type"] == "image/png"
    assert accepted.content == response.content


def test_json_gives_distinct_samples_and_the_settings_used(client):
    body = {"rows": [{"label": "shape0"}, {"label": "shape1"}], "samples": 3, "guidance": 1.5}
    response = client.post("/v1/generate?steps=2", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["settings"] == {"image": {"guidance": 1.5, "steps": 2, "seed": 0}}
    assert [len(samples) for samples in answer["generated"]] == [3, 3]
    urls = [sample["image"]["predicted"] for row in answer["generated"] for sample in row]
    assert len(set(urls)) == 6
    pngs = [png_of(url) for url in urls]
    assert len({Image.open(io.BytesIO(p)).tobytes() for p in pngs}) == 6  # distinct pixels
    assert [mark_of(p)["row"] for p in pngs] == list(range(6))
    assert {mark_of(p)["steps"] for p in pngs} == {2}


def test_the_same_seed_gives_the_same_bytes_and_another_seed_others(client):
    def one(**settings) -> bytes:
        fields = {"label": "shape1", **{k: str(v) for k, v in settings.items()}}
        response = client.post("/v1/generate?format=png", data=fields)
        assert response.status_code == 200, response.text
        return response.content

    first = one(seed=11, steps=3)  # form fields, as the page sends them
    assert one(seed=11, steps=3) == first
    assert one(seed=12, steps=3) != first


def test_request_settings_do_not_leak_into_other_requests(client, image_trained):
    plain = client.post("/v1/generate?format=png", json={"label": "shape0"}).content
    assert mark_of(plain)["seed"] == 0

    def generate(seed: int) -> bytes:
        return client.post(
            "/v1/generate?format=png", json={"label": "shape0", "seed": seed}
        ).content

    def predict() -> str:
        return client.post("/v1/predict", json={"label": "shape0"}).json()["predictions"][0]

    with ThreadPoolExecutor(4) as pool:
        seeded = [pool.submit(generate, seed) for seed in range(1, 7)]
        predicted = [pool.submit(predict) for _ in range(6)]
    assert [mark_of(f.result())["seed"] for f in seeded] == list(range(1, 7))
    for future in predicted:  # the model's own settings, whatever ran beside them
        assert mark_of(png_of(future.result()["image"]["predicted"]))["seed"] == 0
    assert client.post("/v1/generate?format=png", json={"label": "shape0"}).content == plain


@pytest.mark.parametrize(
    ("query", "body", "status", "words"),
    [
        ("?steps=0", {}, 422, "steps"),
        ("", {"steps": 101}, 422, "steps"),
        ("", {"steps": "many"}, 422, "steps"),
        ("", {"guidance": -1}, 422, "guidance"),
        ("?samples=17", {}, 422, "samples"),
        ("", {"samples": 2}, 422, "one file"),  # with ?format=png below
        ("?format=wav", {}, 406, "png"),
        ("", {"rows": [{"label": "shape0"}] * 5, "samples": 4}, 413, "at most 16"),
        ("", {"label": "shape0", "image": "x.png"}, 422, "unknown column"),
    ],
)
def test_bad_requests_are_clear_errors(client, query, body, status, words):
    request = {"label": "shape0"} | body if "rows" not in body else body
    if request.get("samples") == 2:
        query = "?format=png"
    response = client.post("/v1/generate" + query, json=request)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_a_classifier_has_nothing_to_generate(trained):
    with TestClient(create_app(ServeSettings(model_dir=trained.model_dir))) as classifier:
        response = classifier.post("/v1/generate", json={"comment": "a red circle"})
        assert response.status_code == 404
        assert response.json()["error"].startswith("this model generates nothing")
        assert "label (multiclass)" in response.json()["error"]
        targets = classifier.get("/v1/schema").json()["targets"]
        assert [target["generates"] for target in targets] == [None]


def test_schema_and_openapi_list_generation(client):
    targets = client.get("/v1/schema").json()["targets"]
    assert [(t["column"], t["generates"]) for t in targets] == [("image", "image/png")]
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/v1/generate"]["post"]
    content = operation["responses"]["200"]["content"]
    assert {"application/json", "image/png"} <= set(content)
    parameters = {p["name"] for p in operation["parameters"]}
    assert {"guidance", "steps", "seed", "samples", "format"} <= parameters
