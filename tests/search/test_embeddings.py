"""`polymodal embed / index / search` end to end on the generated demo data."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from polymodal import Model
from polymodal.cli import app
from polymodal.data.cache import FeatureCache
from polymodal.data.problems import BadInputError
from polymodal.demo import make_demo_data
from polymodal.search import Index
from polymodal.search.embeddings import query_input, read_source
from polymodal.version import __version__
from tests.media import tiny_config

runner = CliRunner()
ROWS, DIM = 32, 32  # tiny_config: model.dim 32
COLUMNS = ["image", "sound", "note", "brightness", "label", "split"]


def invoke(*args: object):
    return runner.invoke(app, [str(arg) for arg in args])


def ok(*args: object):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result


def refused(*args: object) -> str:
    """The one-line error of a refused command, its line breaks undone."""
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


def hits(*args: object) -> list[dict]:
    return [json.loads(line) for line in ok("search", *args, "--json").stdout.splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("demo"), rows=ROWS)


@pytest.fixture(scope="module")
def model_dir(data, tmp_path_factory):
    """Module fixtures outlive each test's own cache (tests/conftest.py): pass one explicitly."""
    cache = FeatureCache(tmp_path_factory.mktemp("cache"))
    out = tmp_path_factory.mktemp("model") / "m"
    Model(target="label", config=tiny_config(), cache=cache).fit(data, out=out)
    return out


@pytest.fixture(scope="module")
def image_db(data, model_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("index") / "images"
    ok("index", model_dir, data, "--column", "image", "--db", db)
    return db


def test_embed_writes_row_metadata_and_vectors_and_refuses_to_overwrite(data, model_dir, tmp_path):
    output = tmp_path / "vectors.parquet"
    result = ok("embed", model_dir, data, "--column", "sound", "-o", output)
    assert f"{ROWS} vectors written" in result.output
    table = pq.read_table(output)
    assert table.column_names == ["row", *COLUMNS, "vector"]
    vector_type = table.schema.field("vector").type
    assert pa.types.is_list(vector_type) and vector_type.value_type == pa.float32()
    frame = table.to_pandas()
    assert frame["row"].tolist() == list(range(ROWS))
    assert frame[COLUMNS].astype(str).equals(pd.read_csv(data)[COLUMNS].astype(str))
    vectors = np.stack(frame["vector"])
    assert vectors.shape == (ROWS, DIM) and vectors.dtype == np.float32
    expected = Model.load(model_dir).embed(data, column="sound")
    np.testing.assert_allclose(vectors, expected, atol=1e-6)

    assert "--overwrite" in refused("embed", model_dir, data, "--column", "sound", "-o", output)
    ok("embed", model_dir, data, "--column", "image", "-o", output, "--overwrite")
    assert not np.allclose(np.stack(pq.read_table(output)["vector"].to_pylist()), vectors)


def test_embed_skips_rows_without_the_column(data, model_dir, tmp_path):
    frame = pd.read_csv(data)
    frame.loc[[3, 4], "note"] = None
    table = data.parent / "some_notes.csv"
    frame.to_csv(table, index=False)
    output = tmp_path / "notes.parquet"
    result = ok("embed", model_dir, table, "--column", "note", "-o", output)
    assert "2 rows without a value of the column skipped" in " ".join(result.output.split())
    rows = pq.read_table(output)["row"].to_pylist()
    assert rows == [row for row in range(ROWS) if row not in (3, 4)]


def test_index_writes_its_source_and_refuses_an_existing_db(data, model_dir, image_db):
    assert len(Index.open(image_db)) == ROWS
    source = json.loads((image_db / "source.json").read_text())
    assert source == {
        "model": str(model_dir.resolve()),
        "column": "image",
        "kind": "image",
        "polymodal_version": __version__,
        "tables": [{"first_id": 0, "folder": str(data.parent.resolve())}],
    }
    message = refused("index", model_dir, data, "--column", "image", "--db", image_db)
    assert "--append" in message
    assert len(Index.open(image_db)) == ROWS  # nothing added


def test_image_query_finds_its_own_row_first(data, image_db, monkeypatch):
    for row in (0, 7, ROWS - 1):
        path = data.parent / "images" / f"{row:04d}.png"
        top = hits(image_db, "--image", path, "--k", 3)
        assert len(top) == 3 and [hit["rank"] for hit in top] == [1, 2, 3]
        assert top[0]["row"] == row and top[0]["image"] == f"images/{row:04d}.png"
        assert top[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert top[1]["score"] < top[0]["score"]
        assert list(top[0]) == ["rank", "score", "id", "row", *COLUMNS]
    monkeypatch.chdir(data.parent)  # a relative path reads from where the user is
    assert hits(image_db, "--image", "images/0004.png", "--k", 2)[0]["row"] == 4
    table = ok("search", image_db, "--image", "images/0004.png", "--k", 2).output
    assert "2 nearest rows" in table and "1.0000" in table
    for header in ("rank", "score", "id", "row", "label", "split"):
        assert header in table


def test_explain_draws_why_each_top_image_hit_is_like_the_query(data, image_db, tmp_path):
    query = data.parent / "images" / "0005.png"
    top = hits(image_db, "--image", query, "--k", 2, "--explain", tmp_path / "why")
    written = sorted((tmp_path / "why").iterdir())
    assert [path.name for path in written] == [
        f"hit-{rank}-id-{hit['id']}.png" for rank, hit in enumerate(top, start=1)
    ]
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in written)
    message = refused("search", image_db, "--image", query, "--explain", tmp_path / "why")
    assert "not an empty folder" in message, "written figures are never replaced"


def test_explain_needs_an_index_of_continuous_values(data, model_dir, tmp_path):
    db = tmp_path / "notes"
    ok("index", model_dir, data, "--column", "note", "--db", db)
    message = refused("search", db, "--text", "a red thing", "--explain", tmp_path / "why")
    assert "'note' is text" in message and "continuous values (audio, image" in message
    assert not (tmp_path / "why").exists()


def test_a_query_of_another_column_warns_when_no_target_shares_their_space(data, image_db):
    """A classifier's text and image vectors were never trained to agree: the search runs and
    says so, naming the match that would."""
    result = ok("search", image_db, "--text", "a red thing", "--k", 2)
    said = " ".join(result.output.split())
    assert "no target of this model trains the two to agree" in said
    assert "--match image=note" in said and "2 nearest rows" in said


def test_audio_query_finds_its_own_row_first(data, model_dir, tmp_path):
    db = tmp_path / "sounds"
    ok("index", model_dir, data, "--column", "sound", "--db", db)
    for row in (1, 12, 30):
        top = hits(db, "--audio", data.parent / "audio" / f"{row:04d}.wav", "--k", 2)
        assert top[0]["row"] == row
        assert top[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_text_query_finds_its_own_note_first(data, model_dir, tmp_path):
    db = tmp_path / "notes"
    ok("index", model_dir, data, "--column", "note", "--db", db)
    notes = pd.read_csv(data)["note"]
    assert notes.nunique() < ROWS  # notes repeat: any row with the same text is as near
    for row in (0, 9, 21):
        top = hits(db, "--text", notes[row], "--k", 2)
        assert top[0]["note"] == notes[row]
        assert top[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_where_keeps_only_matching_rows(data, image_db):
    test_rows = pd.read_csv(data).query("split == 'test'").index.tolist()
    query = data.parent / "images" / "0000.png"  # a training row: filtered out
    found = hits(image_db, "--image", query, "--k", ROWS, "--where", "split = 'test'")
    assert sorted(hit["row"] for hit in found) == test_rows
    assert {hit["split"] for hit in found} == {"test"}
    message = refused("search", image_db, "--image", query, "--where", "no_such_column = 1")
    assert "--where" in message


def test_append_adds_rows_and_refuses_another_model_or_column(data, model_dir, tmp_path):
    frame = pd.read_csv(data)
    first, second = data.parent / "first.csv", data.parent / "second.csv"
    frame.iloc[:20].to_csv(first, index=False)
    frame.iloc[20:].to_csv(second, index=False)
    db = tmp_path / "db"
    ok("index", model_dir, first, "--column", "image", "--db", db)
    assert len(Index.open(db)) == 20
    ok("index", model_dir, second, "--column", "image", "--db", db, "--append")
    assert len(Index.open(db)) == ROWS
    top = hits(db, "--image", data.parent / "images" / "0025.png", "--k", 1)
    assert top[0]["image"] == "images/0025.png" and top[0]["row"] == 5  # row of second.csv
    assert len(read_source(db).tables) == 1  # both tables in one folder: listed once

    message = refused("index", model_dir, second, "--column", "sound", "--db", db, "--append")
    assert "'image'" in message and "'sound'" in message
    other_model = tmp_path / "copy"
    shutil.copytree(model_dir, other_model)
    message = refused("index", other_model, second, "--column", "image", "--db", db, "--append")
    assert str(model_dir.resolve()) in message
    message = refused("index", model_dir, second, "--column", "image", "--db", db, "--append",
                      "--metric", "l2")  # fmt: skip
    assert "cosine" in message
    assert len(Index.open(db)) == ROWS  # nothing added by a refused command


def test_search_takes_exactly_one_query(data, image_db):
    image = data.parent / "images" / "0000.png"
    assert "exactly one query" in refused("search", image_db)
    assert "exactly one query" in refused("search", image_db, "--image", image, "--text", "red")


def test_a_query_the_model_cannot_read_is_refused(data, image_db, tmp_path):
    message = refused("search", image_db, "--video", tmp_path / "clip.mp4")
    assert "no video input" in message and "image (image)" in message and "note (text)" in message
    message = refused("search", image_db, "--image", tmp_path / "missing.png")
    assert "no vector" in message and "missing.png" in message
    message = refused("search", tmp_path, "--text", "red")
    assert "source.json" in message


def test_a_query_of_another_modality_runs_and_says_what_it_compares(data, image_db):
    result = ok("search", image_db, "--text", "a red thing, seen early today", "--k", 3)
    text = " ".join(result.output.split())
    assert "'note'" in text and "match" in text


def test_query_input_prefers_the_indexed_column_and_never_guesses():
    kinds = {"title": "text", "body": "text", "colour": "category", "photo": "image"}
    assert query_input(kinds, "text", indexed="body") == "body"
    assert query_input(kinds, "text", indexed="photo", chosen="colour") == "colour"
    assert query_input(kinds, "image", indexed="body") == "photo"
    with pytest.raises(BadInputError, match="--query-column"):
        query_input(kinds, "text", indexed="photo")
    with pytest.raises(BadInputError, match="'photo'"):
        query_input(kinds, "text", indexed="body", chosen="photo")
    with pytest.raises(BadInputError, match="no audio input"):
        query_input(kinds, "audio", indexed="photo")


def test_the_source_resolves_each_rows_file_from_its_own_tables_folder(data, model_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(data.parent / "images", elsewhere / "images")
    pd.read_csv(data).iloc[:4].to_csv(elsewhere / "more.csv", index=False)
    db = tmp_path / "db"
    ok("index", model_dir, data, "--column", "image", "--db", db)
    ok("index", model_dir, elsewhere / "more.csv", "--column", "image", "--db", db, "--append")
    source = read_source(db)
    assert [t.first_id for t in source.tables] == [0, ROWS]
    rows = Index.open(db).rows([1, ROWS + 1, 10_000])
    assert rows["id"].tolist() == [1, ROWS + 1]  # an id the index lacks is left out
    first, second = rows.to_dict("records")
    assert source.stored_file(1, first) == data.parent.resolve() / "images" / "0001.png"
    assert source.stored_file(ROWS + 1, second) == elsewhere.resolve() / "images" / "0001.png"
    old = source.model_copy(update={"tables": []})  # an index made before tables were listed
    assert old.stored_file(1, first) is None
    assert old.stored_file(1, {"image": "/abs/x.png"}) == Path("/abs/x.png")
