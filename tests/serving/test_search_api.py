"""Embeddings and search over HTTP (TestClient): `/v1/embed` equals `Model.embed`, `/v1/search`
finds a stored row from its own uploaded file, stored files only by id, and every refusal JSON."""

from __future__ import annotations

import base64
import shutil

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from polymodal.cli import app as cli
from polymodal.data.problems import BadInputError
from polymodal.data.table import Table
from polymodal.model import Model
from polymodal.search.embeddings import build_index, index_source
from polymodal.serving.app import check_model_dir, create_app
from polymodal.serving.settings import ServeSettings

ROWS = 24


def client_for(model_dir, index_dir=None) -> TestClient:
    return TestClient(create_app(ServeSettings(model_dir=model_dir, index_dir=index_dir)))


@pytest.fixture(scope="module")
def client(indexed):
    with client_for(indexed.model_dir, indexed.image_db) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def frame(indexed) -> pd.DataFrame:
    return pd.read_csv(indexed.data)


def encoded(path) -> dict:
    return {"base64": base64.b64encode(path.read_bytes()).decode()}


def refused(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "Traceback" not in response.text
    return response.json()["error"]


def test_embed_equals_model_embed(client, indexed, frame):
    rows = [0, 5, 17]
    cells = frame.loc[rows, ["image", "sound"]].reset_index(drop=True)
    expected = {
        column: Model.load(indexed.model_dir).embed(Table(cells, indexed.folder), column=column)
        for column in ("image", "sound")
    }
    body = {"rows": [{"image": encoded(indexed.folder / frame.loc[r, "image"])} for r in rows]}
    response = client.post("/v1/embed?column=image", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["column"] == "image" and answer["dim"] == expected["image"].shape[1]
    np.testing.assert_allclose(np.array(answer["vectors"]), expected["image"], atol=1e-5)
    assert answer["warnings"] == []

    # The column inside the body (JSON key or multipart field) works as well.
    body = {"column": "image", "image": encoded(indexed.folder / frame.loc[5, "image"])}
    vectors = client.post("/v1/embed", json=body).json()["vectors"]
    np.testing.assert_allclose(vectors[0], expected["image"][1], atol=1e-5)
    sound = (indexed.folder / frame.loc[17, "sound"]).read_bytes()
    response = client.post("/v1/embed", data={"column": "sound"}, files={"sound": ("x", sound)})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["vectors"][0], expected["sound"][2], atol=1e-5)


def test_embed_rows_without_the_column_and_unknown_columns(client, indexed, frame):
    image = encoded(indexed.folder / frame.loc[2, "image"])
    body = {"rows": [{"note": "a red thing"}, {"image": image}]}
    answer = client.post("/v1/embed?column=image", json=body).json()
    assert answer["vectors"][0] is None and len(answer["vectors"][1]) == answer["dim"]
    assert [(w["row"], w["column"]) for w in answer["warnings"]] == [(0, "image")]
    message = refused(client.post("/v1/embed?column=photo", json=body), 422)
    assert "'photo'" in message and "image (image)" in message and "note (text)" in message
    assert "column=" in refused(client.post("/v1/embed", json=body), 422)
    bad = {"image": {"base64": base64.b64encode(b"\x89PNG\r\n\x1a\nbroken").decode()}}
    assert refused(client.post("/v1/embed?column=image", json=bad), 422)


def test_an_uploaded_image_finds_its_own_row_first(client, indexed, frame):
    for row in (0, 9, ROWS - 1):
        picture = (indexed.folder / frame.loc[row, "image"]).read_bytes()
        response = client.post("/v1/search", files={"image": ("q.png", picture)}, data={"k": "3"})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["query_column"] == answer["indexed_column"] == "image"
        hits = answer["hits"]
        assert [hit["rank"] for hit in hits] == [1, 2, 3]
        assert hits[0]["metadata"]["row"] == row
        assert hits[0]["metadata"]["image"] == frame.loc[row, "image"]
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert hits[1]["score"] < hits[0]["score"]
        assert hits[0]["file_url"] == f"/v1/search/items/{hits[0]['id']}/file"
    # JSON with base64 gives the same; a text query goes through the note input.
    body = {"image": encoded(indexed.folder / frame.loc[4, "image"]), "k": 1}
    assert client.post("/v1/search", json=body).json()["hits"][0]["metadata"]["row"] == 4
    answer = client.post("/v1/search", json={"text": frame.loc[3, "note"]}).json()
    assert answer["query_column"] == "note" and len(answer["hits"]) == 10


def test_where_keeps_only_matching_rows(client, indexed, frame):
    picture = (indexed.folder / frame.loc[0, "image"]).read_bytes()  # a training row
    response = client.post(
        "/v1/search",
        files={"image": ("q.png", picture)},
        data={"k": str(ROWS), "where": "split = 'test'"},
    )
    assert response.status_code == 200, response.text
    rows = sorted(hit["metadata"]["row"] for hit in response.json()["hits"])
    assert rows == frame.index[frame["split"] == "test"].tolist()


def test_bad_queries_are_json_4xx(client, indexed, frame):
    picture = (indexed.folder / frame.loc[0, "image"]).read_bytes()
    sound = (indexed.folder / frame.loc[0, "sound"]).read_bytes()
    assert "exactly one query" in refused(client.post("/v1/search", json={"k": 3}), 422)
    both = client.post("/v1/search", files={"image": ("q.png", picture)}, data={"text": "red"})
    assert "exactly one query" in refused(both, 422)
    wav_as_image = client.post("/v1/search", files={"image": ("q.png", sound)})
    assert "audio content" in refused(wav_as_image, 415)
    broken = client.post("/v1/search", files={"image": ("q.png", b"\x89PNG\r\n\x1a\n" + b"x" * 50)})
    assert "no vector" in refused(broken, 422)
    where = client.post("/v1/search", json={"text": "red", "where": "no_such_column = 1"})
    assert "where" in refused(where, 400)
    for k in (0, 101):
        assert "k must be" in refused(client.post("/v1/search", json={"text": "red", "k": k}), 422)
    assert "whole number" in refused(
        client.post("/v1/search", data={"text": "red", "k": "ten"}), 422
    )
    assert refused(client.post("/v1/search", json={"text": "red", "colour": "x"}), 422)
    assert refused(client.post("/v1/search", json={"text": "  "}), 422)
    assert refused(client.post("/v1/search", json={"video": {"base64": "AAAA"}}), 422)
    assert refused(client.post("/v1/search", content=b"{", headers=JSON_TYPE), 400)
    by_class = client.post("/v1/search", json={"text": "red", "by_class": True})
    assert "--positive-by" in refused(by_class, 422)  # a classifier placed no class vectors
    assert client.get("/v1/search/info").json()["by_class"] is False


JSON_TYPE = {"content-type": "application/json"}


def test_a_request_cannot_name_a_path(client, indexed, frame):
    stored = str((indexed.folder / frame.loc[0, "image"]).resolve())
    for body in ({"image": stored}, {"image": "/etc/passwd"}):
        message = refused(client.post("/v1/search", json=body), 422)
        assert "never read" in message
    assert "never read" in refused(client.post("/v1/search", data={"image": stored}), 422)
    # The path's text as a file's bytes is only data: not an image.
    refused(client.post("/v1/search", files={"image": ("x.png", stored.encode())}), 415)
    assert refused(client.get("/v1/search/items/..%2F..%2Fetc%2Fpasswd/file"), 404)  # no route
    assert refused(client.get("/v1/search/items/passwd/file"), 422)
    assert client.get("/v1/search/items/-1/file").status_code == 422


def test_stored_files_only_by_id(client, indexed, frame):
    info = client.get("/v1/search/info").json()
    assert info | {"query_kinds": None} == {
        "column": "image", "kind": "image", "rows": ROWS, "metric": "cosine", "files": True,
        "preview": "img", "query_kinds": None, "max_k": 100, "by_class": False,
    }  # fmt: skip
    assert set(info["query_kinds"]) == {"text", "image", "audio"}
    assert client.get("/v1/schema").json()["search"] == info
    picture = indexed.folder / frame.loc[7, "image"]
    hit = client.post("/v1/search", json={"image": encoded(picture), "k": 1}).json()["hits"][0]
    response = client.get(hit["file_url"])
    assert response.status_code == 200
    assert response.content == picture.read_bytes()
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "no item 9999" in refused(client.get("/v1/search/items/9999/file"), 404)


def test_a_stored_file_gone_is_404(indexed, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(indexed.folder, folder)
    db = tmp_path / "db"
    model = Model.load(indexed.model_dir)
    source = index_source(model, indexed.model_dir, "image")
    build_index(model, source, folder / "data.csv", db, None, False)
    (folder / "images" / "0003.png").unlink()
    (folder / "images" / "0004.png").write_bytes(b"not an image")
    with client_for(indexed.model_dir, db) as client:
        assert client.get("/v1/search/items/2/file").status_code == 200
        assert "no longer there" in refused(client.get("/v1/search/items/3/file"), 404)
        assert "not a image file" in refused(client.get("/v1/search/items/4/file"), 404)


def test_text_index_hits_have_no_file(indexed, frame):
    with client_for(indexed.model_dir, indexed.note_db) as client:
        answer = client.post("/v1/search", json={"text": frame.loc[5, "note"], "k": 2}).json()
        assert answer["indexed_column"] == "note"
        assert answer["hits"][0]["metadata"]["note"] == frame.loc[5, "note"]
        assert answer["hits"][0]["file_url"] is None
        assert "not files" in refused(client.get("/v1/search/items/0/file"), 404)


def test_without_an_index_search_is_404(indexed):
    with client_for(indexed.model_dir) as client:
        for response in (
            client.post("/v1/search", json={"text": "red"}),
            client.get("/v1/search/info"),
            client.get("/v1/search/items/0/file"),
        ):
            assert "--index" in refused(response, 404)
        assert client.get("/v1/schema").json()["search"] is None


def test_an_index_of_another_model_stops_the_server(indexed, tmp_path):
    other = tmp_path / "other-model"
    shutil.copytree(indexed.model_dir, other)
    settings = ServeSettings(model_dir=other, index_dir=indexed.image_db)
    with pytest.raises(BadInputError, match="not of the model served"):
        check_model_dir(settings)
    with (
        pytest.raises(BadInputError, match="not of the model served"),
        client_for(other, indexed.image_db),
    ):
        pass
    result = CliRunner().invoke(cli, ["serve", str(other), "--index", str(indexed.image_db)])
    assert result.exit_code == 2 and "not of the model served" in " ".join(result.output.split())
    result = CliRunner().invoke(cli, ["serve", str(other), "--index", str(tmp_path)])
    assert result.exit_code == 2 and "source.json" in result.output
