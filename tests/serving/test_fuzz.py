"""Fuzzing a running server: over 1,000 malformed requests, no 5xx, and it still answers.

Random bytes as files (some behind real magic numbers, some real files cut short), wrong
value types, truncated multipart bodies, huge fields and broken JSON go to a real uvicorn
server on a loopback port. Every answer must be a JSON 4xx (or a 200 for what happens to be
valid); afterwards a correct request must still get the right prediction.

Only refused requests count as malformed (a 200 was valid after all). Each test counts its own
and asserts its share (`MALFORMED`, over 1,000 together), so the count holds whatever order
the tests run in, or if only some of them run.
"""

from __future__ import annotations

import base64
import json

import httpx
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polymodal.data.table import Table
from polymodal.model import Model
from polymodal.serving.settings import ServeSettings
from tests.serving.conftest import LiveServer

JSON = {"content-type": "application/json"}
# Malformed requests (refused with a 4xx) each test must send, together over 1,000. Most cuts
# of a multipart body still parse (the fields come first), so that test sends few of them.
MALFORMED = {"multipart": 320, "json": 320, "raw": 340, "truncated": 45, "huge": 25}
assert sum(MALFORMED.values()) >= 1000
FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,  # the same 1,000+ requests every run: a failure is reproducible
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
MAGIC = [
    b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00",
    b"RIFF\x00\x10\x00\x00WAVE", b"RIFF\x00\x10\x00\x00AVI ", b"fLaC", b"OggS", b"ID3\x03",
    b"\x00\x00\x00\x18ftypmp42", b"\x00\x00\x00\x18ftypM4A ", b"\x1a\x45\xdf\xa3",
]  # fmt: skip
COLUMNS = ["picture", "sound", "comment", "size", "colour", "score"]
ODD_NAMES = [
    "label",
    "rows",
    "",
    "x" * 300,
    "rows[0][picture]",
    "rows[1][size]",
    "rows[99999][comment]",
    "rows[0]",
]
ODD_VALUES = [
    "",
    "nan",
    "inf",
    "-1e400",
    "1" * 5000,
    "/etc/passwd",
    "img/0.png",
    "../../x",
    "\x00",
    "é\ufffd",
]


@pytest.fixture(scope="module")
def server(trained):
    settings_ = ServeSettings(model_dir=trained.model_dir, max_request_mb=2, decode_timeout_s=20)
    with LiveServer(settings_) as live:
        yield live


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def real_files(trained) -> list[bytes]:
    frame = pd.read_csv(trained.data)
    return [
        (trained.folder / frame.loc[i, c]).read_bytes()
        for i in range(4)
        for c in ("picture", "sound")
    ]


class Counts:
    """Requests a test sent: refused (malformed) and accepted (valid after all)."""

    def __init__(self) -> None:
        self.malformed = self.valid = 0

    def check(self, response: httpx.Response) -> None:
        assert response.status_code < 500, (response.status_code, response.text[:300])
        assert "Traceback" not in response.text
        if response.status_code >= 400:
            body = response.json()
            assert isinstance(body.get("error"), str) and body["error"], body
            self.malformed += 1
        else:
            assert response.status_code == 200, response.status_code
            self.valid += 1


def file_bytes(real_files: list[bytes]) -> st.SearchStrategy[bytes]:
    random = st.builds(
        lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=3000)
    )
    cut = st.sampled_from(real_files).flatmap(
        lambda data: st.integers(0, len(data)).map(lambda end: data[:end])
    )
    return random | cut | st.sampled_from(real_files)


names = st.sampled_from(COLUMNS) | st.sampled_from(ODD_NAMES) | st.text(max_size=12)
texts = (
    st.text(max_size=80)
    | st.integers().map(str)
    | st.floats().map(str)
    | st.sampled_from(ODD_VALUES)
)
endpoints = st.sampled_from(["/v1/predict"] * 4 + ["/v1/explain"])


def test_multipart_with_random_files_and_fields(http, real_files):
    counts = Counts()

    @settings(FUZZ, max_examples=330)
    @given(data=st.data())
    def send(data):
        files = data.draw(st.dictionaries(names, file_bytes(real_files), max_size=3))
        fields = data.draw(st.dictionaries(names, texts, max_size=5))
        upload = {
            name: (data.draw(st.text(max_size=20)) or "f", content)
            for name, content in files.items()
        }
        counts.check(http.post(data.draw(endpoints), files=upload or None, data=fields or None))

    send()
    assert counts.malformed >= MALFORMED["multipart"], vars(counts)


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def test_json_with_wrong_types_and_random_base64(http, real_files):
    counts = Counts()
    encoded = file_bytes(real_files).map(lambda b: {"base64": base64.b64encode(b).decode()})
    data_url = file_bytes(real_files).map(
        lambda b: "data:image/png;base64," + base64.b64encode(b).decode()
    )
    cell = (
        json_values
        | encoded
        | data_url
        | st.sampled_from(ODD_VALUES)
        | st.sampled_from([{"base64": "!!"}, {"base64": 1}])
    )
    row = st.dictionaries(names, cell, max_size=6)
    bodies = row | st.builds(lambda rows: {"rows": rows}, st.lists(row, max_size=4)) | json_values

    @settings(FUZZ, max_examples=330)
    @given(body=bodies, endpoint=endpoints)
    def send(body, endpoint):
        content = json.dumps(body).encode()  # NaN and Infinity included, as sloppy clients do
        counts.check(http.post(endpoint, content=content, headers=JSON))

    send()
    assert counts.malformed >= MALFORMED["json"], vars(counts)


def test_raw_bodies_with_any_content_type(http):
    counts = Counts()

    @settings(FUZZ, max_examples=350)
    @given(
        body=st.binary(max_size=4096),
        content_type=st.sampled_from(
            [
                "application/json",
                "multipart/form-data",
                "multipart/form-data; boundary=xyz",
                "multipart/form-data; boundary=",
                "application/x-www-form-urlencoded",
                "text/plain",
                "",
                "image/png",
                "application/json; charset=utf-16",
                "multipart/form-data; charset=nope; boundary=a",
            ]
        ),  # fmt: skip
        endpoint=endpoints,
    )
    def send(body, content_type, endpoint):
        counts.check(http.post(endpoint, content=body, headers={"content-type": content_type}))

    send()
    assert counts.malformed >= MALFORMED["raw"], vars(counts)


def test_truncated_multipart(http, server, real_files):
    counts = Counts()

    @settings(FUZZ, max_examples=250)
    @given(data=st.data())
    def send(data):
        files = {c: ("f", data.draw(st.sampled_from(real_files))) for c in ("picture", "sound")}
        fields = {"comment": data.draw(st.text(max_size=50)), "size": "0.5", "colour": "red"}
        request = httpx.Request("POST", server.url + "/v1/predict", files=files, data=fields)
        body = request.read()
        cut = data.draw(st.integers(0, len(body)))
        headers = {"content-type": request.headers["content-type"]}
        counts.check(http.post(data.draw(endpoints), content=body[:cut], headers=headers))

    send()
    assert counts.malformed >= MALFORMED["truncated"], vars(counts)


def test_huge_fields(http):
    counts = Counts()

    @settings(FUZZ, max_examples=40)
    @given(
        size=st.integers(500_000, 3_000_000),
        how=st.sampled_from(["form-field", "json-text", "file", "many-fields"]),
    )
    def send(size, how):
        if how == "form-field":
            response = http.post("/v1/predict", data={"comment": "a" * size})
        elif how == "json-text":
            response = http.post("/v1/predict", json={"comment": "word " * (size // 5)})
        elif how == "file":
            png = b"\x89PNG\r\n\x1a\n" + b"\xff" * size
            response = http.post("/v1/predict", files={"picture": ("p", png)})
        else:
            response = http.post("/v1/predict", data={f"f{i}": "1" for i in range(size // 1000)})
        counts.check(response)

    send()
    assert counts.malformed >= MALFORMED["huge"], vars(counts)


def test_the_server_still_answers_correctly_after_the_fuzzing(http, trained):
    frame = pd.read_csv(trained.data)
    record = frame.iloc[7]
    files = {c: ("f", (trained.folder / record[c]).read_bytes()) for c in ("picture", "sound")}
    fields = {
        "comment": record["comment"],
        "size": repr(float(record["size"])),
        "colour": record["colour"],
        "score": repr(float(record["score"])),
    }
    response = http.post("/v1/predict", files=files, data=fields)
    assert response.status_code == 200, response.text
    inputs = frame.iloc[[7]][COLUMNS].reset_index(drop=True)
    reference = Model.load(trained.model_dir).predict(Table(inputs, trained.folder))
    label = response.json()["predictions"][0]["label"]
    assert label["predicted"] == reference.loc[0, "label_predicted"]
    for name, probability in label["probabilities"].items():
        assert abs(probability - reference.loc[0, f"label_prob_{name}"]) < 1e-6
    assert http.get("/health").json()["status"] == "ok"
