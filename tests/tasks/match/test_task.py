"""The match task end to end: columns trained into one space, ranked, embedded and searched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from polymodal import Model
from polymodal.cli import app
from polymodal.config import Config
from polymodal.data.cache import FeatureCache
from polymodal.data.problems import BadInputError
from polymodal.options import apply_options
from polymodal.tasks import TargetState, task_for
from polymodal.tasks.match import info_nce, match_target
from polymodal.tasks.match.loss import MAX_SCALE
from tests.media import paired_classes, tiny_config

runner = CliRunner()


def match_task(classes: tuple[str, ...] = (), **options: str):
    """A match task over columns a and b, with `classes` fitted and `options` such as
    positive_by."""
    state = TargetState(
        column="a=b",
        task="match",
        classes=list(classes),
        options={"columns": ["a", "b"], **options},
    )
    return task_for(state)


def match_config(columns: list[str], positive_by: str | None = "label", epochs: int = 12) -> Config:
    config = tiny_config(max_epochs=epochs)
    config.targets = [match_target(columns, positive_by=positive_by)]
    return config


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return paired_classes(tmp_path_factory.mktemp("paired"))


@pytest.fixture(scope="module")
def model_dir(data, tmp_path_factory) -> Path:
    cache = FeatureCache(tmp_path_factory.mktemp("cache"))
    out = tmp_path_factory.mktemp("model") / "m"
    Model(config=match_config(["image", "sound"]), cache=cache).fit(data, out=out)
    return out


@pytest.fixture(scope="module")
def model(model_dir) -> Model:
    return Model.load(model_dir)


@pytest.fixture(scope="module")
def image_db(model, model_dir, data, tmp_path_factory) -> Path:
    """An index of every row's image vector, made by the module's match model."""
    from polymodal.search.embeddings import build_index, index_source

    db = tmp_path_factory.mktemp("index") / "images"
    build_index(model, index_source(model, model_dir, "image"), data, db, None, False)
    return db


def nearest_class(model: Model, recording: Path) -> tuple[str, float]:
    """The class whose vector is nearest to a recording's, and its cosine similarity."""
    query = model.embed(pd.DataFrame({"sound": [str(recording)]}), "sound")[0]
    names, vectors = model.class_vectors("sound")
    similarity = vectors @ query  # both unit vectors
    return names[int(np.argmax(similarity))], float(np.max(similarity))


# ------------------------------------------------------------------------- training
def test_sound_finds_images_of_its_class_well_above_chance(model, data):
    metrics = model.metrics_["test"]["image=sound"]
    assert metrics["rows"] == (pd.read_csv(data).split == "test").sum()
    # four classes: a random ranking puts a positive first a quarter of the time
    assert metrics["sound→image/precision@1"] >= 0.75, metrics
    assert metrics["image→sound/precision@1"] >= 0.75, metrics
    assert metrics["mAP"] == pytest.approx(
        np.mean([metrics["sound→image/mAP"], metrics["image→sound/mAP"]])
    )


def test_only_the_matched_columns_are_inputs_and_the_key_column_is_not(model):
    assert [state.column for state in model.schema_.inputs] == ["image", "sound"]


def test_evaluate_gives_the_metrics_fit_reported_on_the_same_rows(model, data):
    table = pd.read_csv(data)
    test_rows = table[table.split == "test"]
    again = model.evaluate(
        test_rows.assign(
            image=[str(data.parent / p) for p in test_rows.image],
            sound=[str(data.parent / p) for p in test_rows.sound],
        )
    )
    reported = model.metrics_["test"]["image=sound"]
    for key in ("sound→image/precision@1", "image→sound/mAP", "median_rank"):
        assert again["image=sound"][key] == pytest.approx(reported[key], abs=1e-6)


def test_the_temperature_starts_at_clip_value_and_is_learned(model):
    head = model.head("image=sound")
    scale = float(head.temperature().detach())
    assert scale != pytest.approx(1 / 0.07, rel=1e-4)  # it moved while training
    assert 0 < scale <= MAX_SCALE


# ------------------------------------------------------------------- embeddings
def test_embed_of_a_column_is_its_unit_vector_in_the_shared_space(model, data):
    images = model.embed(data, column="image")
    sounds = model.embed(data, column="sound")
    assert np.allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    decoded = model.decode(model.raw_outputs(data))["image=sound"]
    assert np.allclose(images, decoded["embeddings"][:, 0], atol=1e-5)
    assert np.allclose(sounds, decoded["embeddings"][:, 1], atol=1e-5)
    similarity = (images * sounds).sum(axis=1)
    assert np.allclose(similarity, decoded["image=sound"], atol=1e-5)


def test_predict_writes_each_rows_pair_similarity(model, data):
    frame = model.predict(data)
    assert list(frame.columns) == ["image=sound_similarity"]
    assert frame["image=sound_similarity"].between(-1, 1).all()


def test_a_missing_column_gives_no_similarity_and_no_vector(model, data, tmp_path):
    table = pd.read_csv(data).head(4)
    table.loc[1, "sound"] = None
    table["image"] = [str(data.parent / p) for p in table.image]
    table["sound"] = [str(data.parent / p) if isinstance(p, str) else p for p in table.sound]
    frame = model.predict(table)
    assert np.isnan(frame["image=sound_similarity"][1])
    assert not np.isnan(frame["image=sound_similarity"]).drop(index=1).any()
    assert np.isnan(model.embed(table, column="sound")[1]).all()


# ------------------------------------------------------------------------- the loss
def test_the_loss_is_info_nce_over_rows_where_both_columns_are_present():
    task = match_task()
    task.head(dim=8, branches=1, dropout=0.0)
    generator = torch.Generator().manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(6, 2, 8, generator=generator), dim=-1)
    present = torch.ones(6, 2)
    present[2, 1] = 0  # row 2 lacks b: it adds nothing
    outputs = torch.cat([vectors, present[..., None]], dim=-1)
    keys = torch.arange(6)
    rows = torch.tensor([0, 1, 3, 4, 5])
    expected = info_nce(vectors[rows, 0], vectors[rows, 1], 1 / 0.07)
    loss = task.loss(outputs, keys, torch.ones(6, dtype=torch.bool))
    assert float(loss) == pytest.approx(float(expected), abs=1e-5)


def test_positive_by_makes_rows_of_one_class_positives():
    task = match_task(positive_by="label")
    task.head(dim=8, branches=1, dropout=0.0)
    vectors = torch.nn.functional.normalize(torch.randn(4, 2, 8), dim=-1)
    outputs = torch.cat([vectors, torch.ones(4, 2, 1)], dim=-1)
    keys = torch.tensor([7, 7, 9, 9])
    positives = keys[:, None] == keys[None]
    expected = info_nce(vectors[:, 0], vectors[:, 1], 1 / 0.07, positives)
    assert float(task.loss(outputs, keys, torch.ones(4, dtype=torch.bool))) == pytest.approx(
        float(expected), abs=1e-5
    )


def test_class_proxies_add_each_columns_cross_entropy_against_them():
    task = match_task(("x", "y"), positive_by="label")
    head = task.head(dim=8, branches=1, dropout=0.0)
    vectors = torch.nn.functional.normalize(torch.randn(4, 2, 8), dim=-1)
    present = torch.ones(4, 2)
    present[3, 0] = 0  # row 3 lacks a: no pair, and no proxy term for its a
    outputs = torch.cat([vectors, present[..., None]], dim=-1)
    keys = torch.tensor([0, 1, 0, 1])
    known = torch.ones(4, dtype=torch.bool)
    scale = 1 / 0.07
    rows = torch.tensor([0, 1, 2])
    pairs = info_nce(
        vectors[rows, 0], vectors[rows, 1], scale, keys[rows][:, None] == keys[rows][None]
    )
    proxies = torch.nn.functional.normalize(head.proxies.detach(), dim=-1)
    by_a = torch.nn.functional.cross_entropy(scale * vectors[rows, 0] @ proxies.T, keys[rows])
    by_b = torch.nn.functional.cross_entropy(scale * vectors[:, 1] @ proxies.T, keys)
    expected = pairs + (by_a + by_b) / 2
    assert float(task.loss(outputs, keys, known)) == pytest.approx(float(expected), abs=1e-4)


def test_a_value_unseen_in_training_keeps_its_own_key_above_the_classes():
    keys, known = match_task(("x", "y"), positive_by="label").encode(
        ["y", "new", "x", "new", "other"]
    )
    assert keys[0] == 1 and keys[2] == 0
    assert keys[1] == keys[3] >= 2 and keys[4] >= 2 and keys[4] != keys[1]
    assert known.all()


def test_keys_without_fitted_classes_are_stable_hashes_and_row_positions_without_a_key():
    by_label = match_task(positive_by="k")
    keys, known = by_label.encode(["x", "y", "x", None])
    assert keys[0] == keys[2] != keys[1]
    assert known.tolist() == [True, True, True, False]
    again, _ = by_label.encode(["y"])
    assert again[0] == keys[1]  # the same in every call (and process: not Python's hash)
    own = match_task()
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]})
    keys, known = own.encode(own.cells(frame, own.state, "t.csv"))
    assert keys.tolist() == [0, 1, 2] and known.all()


# ------------------------------------------------------------------ the options
def test_the_cli_options_make_one_match_target():
    config = apply_options(Config(), {"match": "image=sound", "positive_by": "label"})
    (target,) = config.targets
    assert target.column == "image=sound" and target.task == "match"
    assert target.options == {"columns": ["image", "sound"], "positive_by": "label"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--match", "image"], "two or more columns"),
        (["--target", "label", "--positive-by", "label"], "only with --match"),
        (["--match", "image=sound", "--positive-by", "image"], "is one of the matched columns"),
        (["--match", "image=sound", "--anchor", "note"], "is not one of its columns"),
        (["--match", "image=nothing"], "nothing"),
        (["--match", "image=sound", "--positive-by", "nothing"], "--positive-by nothing"),
    ],
)
def test_bad_match_options_are_one_line_errors(data, tmp_path, args, message):
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "m"), *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert message in " ".join(result.output.split())


def test_a_match_with_one_distinct_key_is_refused(data, tmp_path):
    table = pd.read_csv(data).assign(label="same")
    table["image"] = [str(data.parent / p) for p in table.image]
    table["sound"] = [str(data.parent / p) for p in table.sound]
    with pytest.raises(BadInputError, match="one value"):
        Model(config=match_config(["image", "sound"], epochs=1)).fit(table)


# ------------------------------------------------------------------------ search
def test_a_sound_query_finds_images_of_its_class_in_an_image_index(model_dir, data, tmp_path):
    db = tmp_path / "images"
    result = runner.invoke(
        app, ["index", str(model_dir), str(data), "--column", "image", "--db", str(db)]
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(data)
    hits_of_own_class = []
    for row in table.index[table.split == "test"][:8]:
        query = data.parent / table.sound[row]
        found = runner.invoke(app, ["search", str(db), "--audio", str(query), "--k", "1", "--json"])
        assert found.exit_code == 0, found.output
        assert "to agree" not in found.output, "the match target put both in one space"
        (hit,) = [json.loads(line) for line in found.stdout.splitlines()]
        hits_of_own_class.append(hit["label"] == table.label[row])
    assert np.mean(hits_of_own_class) >= 0.75


def test_the_class_vectors_are_the_units_of_the_proxies_named_by_class(model):
    names, vectors = model.class_vectors("sound")
    assert names == model.task().state.classes and len(names) == 4
    assert vectors.shape == (4, model.config.model.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    proxies = model.head("image=sound").proxies.detach().numpy()
    np.testing.assert_allclose(vectors[2] * np.linalg.norm(proxies[2]), proxies[2], rtol=1e-5)
    same, again = model.class_vectors("image")
    assert same == names and np.array_equal(again, vectors)  # one set, shared by the columns
    assert model.class_vectors("label") is None  # not a column of the space


def test_search_by_class_ranks_by_the_vector_of_the_querys_nearest_class(model, image_db, data):
    from polymodal.search.embeddings import search_index

    db = image_db
    table = pd.read_csv(data)
    images = model.embed(table.assign(image=[str(data.parent / p) for p in table.image]), "image")
    names, vectors = model.class_vectors("sound")
    rights = []
    for row in table.index[table.split == "test"][:8]:
        query = str(data.parent / table.sound[row])
        plain = search_index(db, "audio", query, k=len(table))
        result = search_index(db, "audio", query, k=len(table), by_class=True)
        nearest = int(np.argmax(vectors @ plain.query))  # the query's own vector is a unit
        assert result.query_class.name == names[nearest]
        assert result.query_class.similarity == pytest.approx(float(vectors[nearest] @ plain.query))
        np.testing.assert_array_equal(result.query, vectors[nearest])
        expected = images @ vectors[nearest]  # every stored image, scored by the class
        np.testing.assert_allclose(result.hits["score"], expected[result.hits["row"]], atol=1e-5)
        np.testing.assert_allclose(result.hits["score"], np.sort(expected)[::-1], atol=1e-5)
        assert not np.allclose(result.hits["score"], plain.hits["score"])
        rights.append(result.hits["label"][0] == table.label[row])
    assert np.mean(rights) >= 0.75


def test_search_by_class_says_which_class_it_searched(model, image_db, data):
    from polymodal.search.embeddings import search_index

    table = pd.read_csv(data)
    query = data.parent / table.sound[int(table.index[table.split == "test"][0])]
    args = ["search", str(image_db), "--audio", str(query), "--k", "3", "--json", "--by-class"]
    found = runner.invoke(app, args)
    assert found.exit_code == 0, found.output
    name, similarity = nearest_class(model, query)
    said = f"the query is nearest to class {name!r} (similarity {similarity:.3f})"
    assert said in " ".join(found.stderr.split())
    hits = [json.loads(line)["id"] for line in found.stdout.splitlines()]
    expected = search_index(image_db, "audio", str(query), k=3, by_class=True).hits["id"]
    assert hits == expected.tolist()


def test_search_by_class_needs_a_match_by_class(data, tmp_path):
    from polymodal.search.embeddings import build_index, index_source, search_index

    out = tmp_path / "pairs"
    config = match_config(["image", "sound"], positive_by=None, epochs=1)
    model = Model(config=config).fit(data, out=out)
    assert model.class_vectors("sound") is None
    db = tmp_path / "images"
    build_index(model, index_source(model, out, "image"), data, db, None, False)
    query = str(data.parent / pd.read_csv(data).sound[0])
    with pytest.raises(BadInputError, match="--positive-by"):
        search_index(db, "audio", query, by_class=True)


# ----------------------------------------------------------------------- compare
def test_compare_ranks_the_fusions_of_a_match_by_map_without_unimodal_runs(data):
    from polymodal.evaluation.compare import compare

    config = match_config(["image", "sound"], epochs=2)
    result = compare(data, "image=sound", config, seeds=1, fusions=["concat", "late"], log=str)
    assert [row["name"] for row in result["configurations"]] == ["fusion: concat", "fusion: late"]
    assert result["metric"] == "mAP" and result["higher_is_better"]
    assert all(0 < row["mean"] <= 1 for row in result["configurations"])
    assert result["modality_gain"] == {}


def test_the_compare_command_takes_a_match(data, tmp_path):
    result = runner.invoke(
        app,
        ["compare", str(data), "--match", "image=sound", "--positive-by", "label",
         "--seeds", "1", "--fusions", "concat", "--epochs", "1", "--out", str(tmp_path / "c")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert saved["target"] == "image=sound" and saved["metric"] == "mAP"


# ----------------------------------------------------------------------- serving
def test_the_server_predicts_pair_similarities_and_finds_images_by_sound(
    model, model_dir, image_db, data
):
    import base64

    from fastapi.testclient import TestClient

    from polymodal.serving.app import create_app
    from polymodal.serving.settings import ServeSettings

    db = image_db
    table = pd.read_csv(data)
    row = int(table.index[table.split == "test"][0])
    files = {c: (data.parent / table.loc[row, c]).read_bytes() for c in ("image", "sound")}
    settings = ServeSettings(model_dir=model_dir, index_dir=db)
    with TestClient(create_app(settings)) as client:
        body = {c: {"base64": base64.b64encode(files[c]).decode()} for c in files}
        answer = client.post("/v1/predict", json=body)
        assert answer.status_code == 200, answer.text
        (prediction,) = answer.json()["predictions"]
        expected = model.predict(table.loc[[row], ["image", "sound"]].map(
            lambda path: str(data.parent / path)))["image=sound_similarity"][0]  # fmt: skip
        assert prediction["image=sound"]["predicted"] == pytest.approx(float(expected), abs=1e-5)
        found = client.post(
            "/v1/search", files={"audio": ("q.wav", files["sound"])}, data={"k": "1"}
        )
        assert found.status_code == 200, found.text
        (hit,) = found.json()["hits"]
        assert hit["metadata"]["label"] == table.loc[row, "label"]
        assert found.json()["query_class"] is None
        assert client.get("/v1/search/info").json()["by_class"] is True
        name, similarity = nearest_class(model, data.parent / table.loc[row, "sound"])
        for request in (
            {"files": {"audio": ("q.wav", files["sound"])}, "data": {"k": "5", "by_class": "true"}},
            {"json": {"audio": body["sound"], "k": 5, "by_class": True}},
        ):
            by_class = client.post("/v1/search", **request)
            assert by_class.status_code == 200, by_class.text
            named = by_class.json()["query_class"]
            assert named == {"name": name, "similarity": pytest.approx(similarity, abs=1e-5)}
            scores = [hit["score"] for hit in by_class.json()["hits"]]
            assert len(scores) == 5 and scores == sorted(scores, reverse=True)
        bad = client.post(
            "/v1/search", files={"audio": ("q.wav", files["sound"])}, data={"by_class": "maybe"}
        )
        assert bad.status_code == 422 and "by_class must be true or false" in bad.json()["error"]


def test_the_search_page_searches_by_class_for_a_recording(model, model_dir, image_db, data):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from polymodal.serving.settings import ServeSettings
    from tests.serving.conftest import ARTIFACTS, LiveServer, chromium

    table = pd.read_csv(data)
    recording = data.parent / table.sound[int(table.index[table.split == "test"][1])]
    expected, _ = nearest_class(model, recording)
    ARTIFACTS.mkdir(exist_ok=True)
    settings = ServeSettings(model_dir=model_dir, index_dir=image_db)
    with LiveServer(settings) as server, chromium() as browser:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.find_element(By.ID, "search-by-class").is_displayed())
        browser.find_element(By.ID, "search-file").send_keys(str(recording))
        browser.find_element(By.ID, "search-by-class").click()
        browser.find_element(By.ID, "search-button").click()
        results = browser.find_element(By.ID, "search-results")
        wait.until(lambda _: results.get_attribute("data-state") in ("done", "error"))
        assert results.get_attribute("data-state") == "done"
        assert f"of class {expected} (the query's similarity to it" in results.text
        assert len(results.find_elements(By.CSS_SELECTOR, ".hit")) == 10
        browser.execute_script("arguments[0].scrollIntoView()", results)
        browser.save_screenshot(str(ARTIFACTS / "serving-search-by-class.png"))
