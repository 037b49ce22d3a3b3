"""The music target: tokens of a score and back, the figures on worked examples, the loss
falling on a fixed batch, training on a tiny table of melodies, seeded sampling, an opening
bar, MIDI files with their provenance mark, WAV rendering and the serving response."""

from __future__ import annotations

import base64
import shutil
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from polymodal.cli import app
from polymodal.config import TargetConfig
from polymodal.data.problems import BadInputError
from polymodal.fusion import Fused
from polymodal.model import Model
from polymodal.tasks import fit_target, task_for
from polymodal.tasks.music import metrics
from polymodal.tasks.music.files import midi_bytes, read_mark, rendering_missing
from polymodal.tasks.music.tokens import Event, Piece, parse_tokens, read_music, score_tokens
from tests.media import tiny_config

SCALES = {"C": [60, 62, 64, 65, 67, 69, 71, 72], "G": [67, 69, 71, 72, 74, 76, 78, 79]}
OPTIONS = {"layers": 1, "heads": 2}


def melody(tonic: str, beats: int, bars: int, rng: np.random.Generator) -> str:
    """Token text of a random tune on the tonic's major scale, one quarter note a beat."""
    tokens = [f"Key_{tonic}_major", f"TimeSig_{beats}/4"]
    for _ in range(bars):
        tokens.append("Bar")
        for beat in range(beats):
            tokens += [f"Pos_{beat}", f"Pitch_{rng.choice(SCALES[tonic])}", "Dur_1"]
    return " ".join(tokens)


def tune_table(folder, rows: int = 32):
    """A table of short MIDI tunes with their key and metre as inputs."""
    rng = np.random.default_rng(0)
    (folder / "mid").mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(rows):
        tonic, beats = ("C", "G")[index % 2], (4, 3)[index // 2 % 2]
        (folder / "mid" / f"{index}.mid").write_bytes(midi_bytes(melody(tonic, beats, 2, rng)))
        records.append({"key": tonic, "metre": f"{beats}/4", "tune": f"mid/{index}.mid"})
    path = folder / "data.csv"
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def music_config(**options):
    config = tiny_config(max_epochs=3)
    config.targets = [TargetConfig(column="tune", task="music", options=OPTIONS | options)]
    return config


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one torch thread is as fast as two, and far faster than two
    that wait for each other when other work shares the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("music_target")
    data = tune_table(root)
    model = Model(config=music_config()).fit(str(data), out=root / "model")
    return root, data, model


def test_a_score_round_trips_through_tokens_and_midi(tmp_path):
    from music21 import key, meter, note, stream

    part = stream.Part([meter.TimeSignature("3/4"), key.Key("G")])
    for pitch, length in [("G4", 1), ("B4", 1), ("D5", 1), ("F#4", 2), ("A4", 0.5)]:
        part.append(note.Note(pitch, quarterLength=length))
    part.append(note.Rest(quarterLength=0.5))
    part.append(note.Note("G4", quarterLength=3))
    tokens = score_tokens(part.makeMeasures(), max_bars=8)
    assert tokens[0] in ("Key_G_major", "Key_E_minor")  # one sharp, as the signature says
    assert tokens[1:3] == ["TimeSig_3/4", "Bar"]
    assert tokens.count("Bar") == 3 and "Rest" in tokens and "Dur_1/2" in tokens
    (tmp_path / "t.mid").write_bytes(midi_bytes(" ".join(tokens)))
    assert read_music(tmp_path / "t.mid", max_bars=8) == " ".join(tokens)
    assert read_music(tmp_path / "t.mid", max_bars=1).split() == tokens[: tokens.index("Bar", 3)]


def test_figures_on_worked_examples():
    scale = [Event(p, Fraction(1), i // 4, Fraction(i % 4)) for i, p in enumerate(SCALES["C"])]
    piece = Piece("C", "major", (4, 4), scale, 2)
    assert metrics.notes_in_key(piece) == (8, 8)  # a C major scale is all in C major
    assert metrics.notes_in_key(piece, "F#", "major") == (2, 8)  # B, and F as E#
    assert metrics.bars_filled(piece) == (2, 2)  # four quarters fill a bar of 4/4
    short = Piece("C", "major", (4, 4), scale[:7], 2)  # three quarters in the second bar
    assert metrics.bars_filled(short) == (1, 2)
    assert metrics.bars_filled(Piece("C", "major", (3, 4), scale[:3], 1)) == (1, 1)
    assert metrics.bars_filled(Piece("C", "major", (6, 8), scale[:3], 1)) == (1, 1)
    assert metrics.bars_filled(Piece("C", "major", (2, 4), scale[:3], 1)) == (0, 1)
    gap = [scale[0], scale[1]._replace(onset=Fraction(2)), scale[2]._replace(duration=2)]
    assert metrics.bars_filled(Piece("C", "major", (4, 4), gap, 1)) == (0, 1)  # a hole, 4 beats
    read = parse_tokens("Key_C_major TimeSig_2/4 Bar Pos_0 Pitch_60 Dur_1 Pos_1 Rest Dur_1 Bar")
    assert metrics.bars_filled(read) == (1, 2)  # a rest fills too; an empty bar does not
    assert metrics.distances([piece], [piece])["pitch_class_distance"] == 0.0
    other = Piece("C", "major", (4, 4), [Event(61, Fraction(1, 2), 0, Fraction(0))], 1)
    assert metrics.distances([piece], [other]) == pytest.approx(
        {"pitch_class_distance": 1.0, "duration_distance": 1.0, "histogram_distance": 1.0}
    )


def test_loss_falls_on_a_fixed_batch(tmp_path):
    data = tune_table(tmp_path, rows=8)
    frame = pd.read_csv(data)
    state = fit_target(frame, TargetConfig(column="tune", task="music", options=OPTIONS),
                       "t.csv", tmp_path)  # fmt: skip
    task = task_for(state)
    assert state.task == "music" and fit_target(frame, TargetConfig(column="tune"), "t.csv",
                                                tmp_path).task == "music"  # fmt: skip
    torch.manual_seed(0)
    head = task.head(16, 1, 0.0)
    values, known = task.encode([str(tmp_path / p) for p in frame["tune"]])
    target, known = torch.from_numpy(values), torch.from_numpy(known)
    memory = torch.randn(8, 3, 16)
    fused = Fused(memory[:, :1], torch.ones(8, 1), memory, torch.ones(8, 3, dtype=torch.bool))
    losses = []
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(30):
        optimiser.zero_grad()
        loss = task.loss(head(fused, target), target, known)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_validation_score_is_minus_the_nll_per_note(trained):
    history = trained[2].metrics_["history"]
    assert all(np.isfinite(h["val_score"]) and h["val_score"] < 0 for h in history)


def test_seeded_sampling_repeats_and_ignores_batching(trained):
    _, data, model = trained
    features = model.encode(str(data))

    def texts(first_row: int = 0, part=features, **decoding) -> list[str]:
        model.set_decoding(**decoding)
        return list(model.decode(model.forward(part, first_row=first_row))["tune"]["text"])

    first = texts(seed=3)
    assert texts(seed=3) == first and texts(seed=4) != first
    part = {name: {k: v[5:9] for k, v in item.items()} for name, item in features.items()}
    assert texts(5, part, seed=3) == first[5:9]


def test_an_opening_bar_starts_every_piece(trained, tmp_path):
    root, data, model = trained
    opening = root / "mid" / "1.mid"
    model.set_decoding(opening=str(opening), seed=0)
    texts = model.decode(model.forward(model.encode(str(data))))["tune"]["text"]
    first_bar = read_music(opening, max_bars=1)
    assert all(str(text).startswith(first_bar + " ") for text in texts)
    model.set_decoding(opening="")
    with pytest.raises(BadInputError, match="nothing.mid"):
        model.set_decoding(opening=str(tmp_path / "nothing.mid"))
    model.set_decoding(opening="")


def test_predict_writes_marked_midi_and_wav(trained, tmp_path):
    root = trained[0]
    data = four_rows(root, tmp_path)
    model = Model.load(root / "model").set_decoding(music_dir=str(tmp_path / "out"), seed=5)
    predicted = model.predict(str(data))
    paths = predicted["tune_predicted"].tolist()
    assert paths[2] == str(tmp_path / "out" / "tune-000002.mid")
    mark = read_mark(paths[2])
    assert mark["generated"] and mark["model"] == "model" and (mark["row"], mark["seed"]) == (2, 5)
    assert read_mark(root / "mid" / "0.mid") is None
    listed = [*paths, str(root / "mid" / "0.mid"), str(data), "not a path"]
    assert model.task("tune").count_generated(listed) == 4  # what `polymodal inspect` asks
    again = model.predict(str(data))["tune_predicted"].tolist()
    assert again[0].endswith("tune-000000-2.mid")  # never over an existing file
    wavs = predicted["tune_wav"].tolist()
    assert all(w.endswith(".wav") for w in wavs)
    with open(wavs[0], "rb") as handle:
        assert handle.read(4) == b"RIFF"
    with pytest.raises(BadInputError, match="music_dir"):
        Model.load(root / "model").predict(str(data))


def four_rows(root, folder):
    """The first four rows of the tiny table (each WAV takes FluidSynth a third of a second)."""
    frame = pd.read_csv(root / "data.csv").head(4)
    frame["tune"] = [str(root / path) for path in frame["tune"]]
    frame.to_csv(folder / "four.csv", index=False)
    return folder / "four.csv"


def test_cli_predict_and_generate_write_music(trained, tmp_path):
    root = trained[0]
    data = four_rows(root, tmp_path)
    output = tmp_path / "preds.csv"
    options = ["--seed", "2", "--temperature", "0.8", "--top-k", "20"]
    model = str(root / "model")
    result = CliRunner().invoke(app, ["predict", model, str(data), "-o", str(output), *options])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(output)
    assert written["tune_predicted"][1] == "preds_music/tune-000001.mid"
    assert read_mark(tmp_path / written["tune_predicted"][1])["temperature"] == 0.8
    made = CliRunner().invoke(app, ["generate", model, str(data), "--out", str(tmp_path / "gen"),
                                    "-n", "2", "--seed", "1"])  # fmt: skip
    assert made.exit_code == 0, made.output
    table = pd.read_csv(tmp_path / "gen" / "generated.csv")
    assert len(table) == 8 and table["tune"][7] == "music/tune-000007.mid"
    assert list(table["key"]) == list(np.repeat(pd.read_csv(data)["key"], 2))
    assert read_mark(tmp_path / "gen" / table["tune"][7])["row"] == 7
    seen = CliRunner().invoke(app, ["inspect", str(tmp_path / "gen" / "generated.csv")])
    assert "tune: 8 of 8 rows point at generated music files" in seen.output
    other = str(tmp_path / "other.csv")
    refused = CliRunner().invoke(
        app, ["predict", model, str(data), "-o", other, "--image-dir", "i"]
    )
    assert refused.exit_code != 0 and "--image-dir" in refused.output


def test_wav_rendering_is_installed():
    """The Makefile installs fluidsynth and the GM sound font: the WAV tests must run."""
    assert rendering_missing() is None or shutil.which("apt-get") is None


def test_serving_response_carries_the_audio(trained):
    _, data, model = trained
    model.set_decoding(seed=0)
    task = model.task("tune")
    decoded = model.decode(model.forward(model.encode(str(data))))["tune"]
    response = task.prediction(decoded, 0).model_dump()
    assert response["predicted"] == decoded["text"][0]
    assert response["audio"].startswith("data:audio/wav;base64,")
    assert base64.b64decode(response["audio"].split(",", 1)[1])[:4] == b"RIFF"


def test_evaluate_reports_the_figures(trained):
    _, data, model = trained
    figures = model.evaluate(str(data))["tune"]
    assert figures["rows"] == 32 and figures["in_key_share_real"] == 1.0
    assert figures["metre_fill_share_real"] == 1.0
    assert set(model.task("tune").metrics) <= set(figures)


def test_an_unreadable_file_is_skipped_with_one_line(tmp_path):
    data = tune_table(tmp_path, rows=8)
    (tmp_path / "mid" / "3.mid").write_bytes(b"not midi at all")
    frame = pd.read_csv(data)
    with pytest.warns(UserWarning, match=r"row 3, column 'tune', file .*3\.mid"):
        state = fit_target(frame, TargetConfig(column="tune", task="music"), "t.csv", tmp_path)
    with pytest.warns(UserWarning, match="row 3"):
        _, known = task_for(state).encode([str(tmp_path / p) for p in frame["tune"]])
    assert known.sum() == 7 and not known[3]


def test_v1_generate_returns_a_wav_and_predict_carries_the_audio(trained):
    from fastapi.testclient import TestClient

    from polymodal.serving.app import create_app
    from polymodal.serving.settings import ServeSettings

    with TestClient(create_app(ServeSettings(model_dir=trained[0] / "model"))) as client:
        raw = client.post("/v1/generate?format=wav", json={"key": "C", "metre": "4/4", "seed": 3})
        assert raw.status_code == 200, raw.text
        assert raw.headers["content-type"] == "audio/wav" and raw.content[:4] == b"RIFF"
        again = client.post("/v1/generate?format=wav", json={"key": "C", "metre": "4/4", "seed": 3})
        assert again.content == raw.content  # the same seed and inputs, the same bytes
        answer = client.post("/v1/predict", json={"key": "G", "metre": "3/4"}).json()
        assert answer["predictions"][0]["tune"]["audio"].startswith("data:audio/wav;base64,")
