"""End to end through the command line, on generated data."""

import io
import json
import re
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import soundfile
import yaml
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from polymodal.cli import app
from tests.media import shapes_and_tones, write_mp4

runner = CliRunner()
TINY = {
    "model": {"dim": 32, "layers": 1, "heads": 2},
    "train": {"max_epochs": 2, "batch_size": 16},
    "preprocess": {"audio": {"n_mels": 32}},
}


def write_config(folder, **extra) -> str:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **extra}))
    return str(path)


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes_and_tones(tmp_path_factory.mktemp("cli"), rows=32)


def test_train_predict_evaluate_inspect(data, tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "model"
    result = invoke("train", str(data), "--target", "label", "--config", config, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "model saved to" in result.output and (out / "model.safetensors").is_file()

    predictions = tmp_path / "preds.csv"
    result = invoke("predict", str(out), str(data), "-o", str(predictions))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(predictions)
    assert len(frame) == 32 and "label_prob_circle-low" in frame.columns

    result = invoke("predict", str(out), str(data), "-o", str(predictions))
    assert result.exit_code == 2 and "--overwrite" in result.output

    report = tmp_path / "eval.json"
    result = invoke("evaluate", str(out), str(data), "--json", str(report))
    assert result.exit_code == 0 and "weighted_f1" in result.output and "confusion" in result.output
    assert json.loads(report.read_text())["label"]["rows"] == 32

    result = invoke("inspect", str(data))
    assert result.exit_code == 0
    for expected in ("picture", "image", "sound", "audio", "comment", "text", "category"):
        assert expected in result.output


def test_bad_files_are_counted_and_named_then_strict_stops(tmp_path):
    data = shapes_and_tones(tmp_path, rows=32)
    frame = pd.read_csv(data)
    (tmp_path / "img" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # corrupt PNG
    (tmp_path / "snd" / "5.wav").write_bytes(b"")  # empty WAV
    frame.loc[7, "picture"] = "img/does_not_exist.png"  # missing file
    frame.to_csv(data, index=False)
    raw = data.read_bytes().replace(b"sample number 9 ", b"sample \xff\xfe number 9 ")
    data.write_bytes(raw)  # one cell of non-UTF-8 text

    config = write_config(tmp_path)
    result = invoke(
        "train", str(data), "--target", "label", "--config", config, "--out", str(tmp_path / "m")
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "4 input problems" in text
    for expected in (
        "3.png",
        "5.wav",
        "does_not_exist.png",
        "UTF-8",
        "file is empty",
        "file not found",
    ):
        assert expected in text
    problems = json.loads((tmp_path / "m" / "metrics.json").read_text())["problems"]
    assert sorted((p["row"], p["column"]) for p in problems) == [
        (3, "picture"), (5, "sound"), (7, "picture"), (9, "comment")
    ]  # fmt: skip

    result = invoke(
        "train",
        str(data),
        "--target",
        "label",
        "--config",
        config,
        "--out",
        str(tmp_path / "s"),
        "--strict",
    )
    assert result.exit_code == 2
    assert "row 3, column 'picture'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s" / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "nope"], "no target column 'nope'"),
        (["--target", "label", "--inputs", "ghost"], "no column 'ghost'"),
        (["--target", "label", "--fusion", "magic"], "unknown fusion 'magic'"),
    ],
)
def test_one_line_errors(data, tmp_path, args, message):
    result = invoke(
        "train", str(data), *args, "--config", write_config(tmp_path), "--out", str(tmp_path / "o")
    )
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_existing_output_is_never_overwritten_silently(data, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    config = write_config(tmp_path)
    result = invoke("train", str(data), "--target", "label", "--config", config, "--out", str(out))
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (out / "notes.txt").read_text() == "mine"
    result = invoke(
        "train",
        str(data),
        "--target",
        "label",
        "--config",
        config,
        "--out",
        str(out),
        "--overwrite",
    )
    assert result.exit_code == 0 and (out / "model.safetensors").is_file()


def test_resume_continues_from_the_last_checkpoint(data, tmp_path, monkeypatch):
    from polymodal.training import fit as fit_module

    config = write_config(tmp_path, train={"max_epochs": 3, "batch_size": 16, "patience": 10})
    out = tmp_path / "r"
    original = fit_module.History.on_train_epoch_start

    def crash_in_second_epoch(self, trainer, module):
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")
        original(self, trainer, module)

    monkeypatch.setattr(fit_module.History, "on_train_epoch_start", crash_in_second_epoch)
    args = ["train", str(data), "--target", "label", "--config", config, "--out", str(out)]
    crashed = invoke(*args)
    assert crashed.exit_code != 0 and (out / ".checkpoints" / "last.ckpt").is_file()
    assert not (out / "model.safetensors").exists()
    monkeypatch.setattr(fit_module.History, "on_train_epoch_start", original)

    assert invoke(*args).exit_code == 2, "the half-written folder is not overwritten silently"
    resumed = invoke(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2], "epoch 0 is not trained again"
    assert not (out / ".checkpoints").exists(), "a finished run cleans its checkpoints"


def test_resume_without_a_checkpoint_is_an_error(data, tmp_path):
    args = ["train", str(data), "--target", "label", "--config", write_config(tmp_path)]
    result = invoke(*args, "--out", str(tmp_path / "none"), "--resume")
    assert result.exit_code == 2 and "no checkpoint" in result.output


def test_video_column_end_to_end_with_its_sound_track(tmp_path):
    rows = []
    for index in range(16):
        bright = index % 2 == 0
        write_mp4(tmp_path / f"v{index}.mp4", brightness=220 if bright else 30, with_audio=True)
        rows.append({"clip": f"v{index}.mp4", "label": "bright" if bright else "dark"})
    pd.DataFrame(rows).to_csv(tmp_path / "videos.csv", index=False)
    config = write_config(
        tmp_path,
        columns={"clip_sound": {"kind": "audio", "source": "clip"}},
        preprocess={"video": {"frames": 4, "size": 32}, "audio": {"n_mels": 32}},
    )
    out = tmp_path / "vm"
    result = invoke(
        "train",
        str(tmp_path / "videos.csv"),
        "--target",
        "label",
        "--config",
        config,
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    schema = json.loads((out / "config.json").read_text())["schema"]
    assert {(s["column"], s["kind"]) for s in schema["inputs"]} == {
        ("clip", "video"),
        ("clip_sound", "audio"),
    }
    result = invoke(
        "predict", str(out), str(tmp_path / "videos.csv"), "-o", str(tmp_path / "vp.csv")
    )
    assert result.exit_code == 0 and len(pd.read_csv(tmp_path / "vp.csv")) == 16


def test_list_components():
    result = invoke("list", "fusions")
    assert result.exit_code == 0 and {"attention", "concat", "late"} <= set(result.output.split())
    result = invoke("list", "encoders")
    assert "audio_cnn" in result.output


def drawn_shape(path) -> str:
    """Circle or square, from the picture itself: the share of the shape's bounding box it
    fills (a disc fills pi/4 of it, a square all of it)."""
    pixels = ndimage.median_filter(
        np.asarray(Image.open(path).convert("RGB"), dtype=np.float32), size=(3, 3, 1)
    )  # less noise
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    away = np.linalg.norm(pixels - np.median(border, axis=0), axis=2)  # from the background
    regions, _ = ndimage.label(away > away.max() / 2)
    shape = regions == np.bincount(regions.ravel())[1:].argmax() + 1  # the largest region
    rows, columns = np.nonzero(shape)
    box = (np.ptp(rows) + 1) * (np.ptp(columns) + 1)
    return "square" if shape.sum() / box > 0.88 else "circle"


def heard_pitch(path) -> str:
    """Low (330 Hz) or high (1320 Hz), from the sound's strongest frequency."""
    wave, rate = soundfile.read(path)
    frequency = np.fft.rfftfreq(len(wave), 1 / rate)[np.abs(np.fft.rfft(wave)).argmax()]
    return "high" if frequency > 700 else "low"


def best_guess_accuracy(clue: pd.Series, label: pd.Series) -> float:
    """The best any model can do from `clue` alone: the commonest label for each clue value."""
    return float(pd.crosstab(clue, label).max(axis=1).sum() / len(label))


def test_demo_data_needs_two_modalities(tmp_path):
    """The label is shape × pitch, read back from the generated pictures and sounds: both
    together give it on every row; either alone names the right label for about half."""
    from polymodal.demo import make_demo_data

    path = make_demo_data(tmp_path, rows=200)
    frame = pd.read_csv(path)
    assert set(frame["split"]) == {"train", "valid", "test"}
    assert frame["label"].nunique() == 4
    shape = frame["image"].map(lambda name: drawn_shape(tmp_path / name))
    pitch = frame["sound"].map(lambda name: heard_pitch(tmp_path / name))
    assert (frame["label"] == shape + "-" + pitch).all()
    assert best_guess_accuracy(shape, frame["label"]) <= 0.6
    assert best_guess_accuracy(pitch, frame["label"]) <= 0.6
    assert best_guess_accuracy(frame["note"], frame["label"]) <= 0.6  # the text: a distractor


def test_demo_trains_reports_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "demo"
    result = invoke("demo", "--out", str(out), "--rows", "64")
    assert result.exit_code == 0, result.output
    assert {"model.safetensors", "config.json", "report.html"} <= {
        p.name for p in (out / "model").iterdir()
    }
    assert "What to look at next" in result.output
    again = invoke("demo", "--out", str(out), "--rows", "64")
    assert again.exit_code != 0 and "--overwrite" in again.output


LIBRARY_LINES = ("GPU available", "TPU available", "HPU available", "Tip:", "LOCAL_RANK")
LIBRARY_WORDS = ("litlogger", "Trainer")


def test_train_shows_polymodal_lines_only(tmp_path):
    """No Lightning banners or tips, and a warning is one `warning:` line, in a real process
    (the command line sets this up before Lightning is imported)."""
    from polymodal.demo import make_demo_data

    data = make_demo_data(tmp_path / "demo", rows=40)
    args = ["train", str(data), "--target", "label", "--epochs", "1", "--no-report"]
    result = subprocess.run(
        [sys.executable, "-m", "polymodal.cli", *args, "--out", str(tmp_path / "m")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "model saved to" in text
    for unwanted in (*LIBRARY_LINES, *LIBRARY_WORDS):
        assert unwanted not in text, text
    assert not re.search(r"\.py:\d+: ", text), "a warning in Python's multi-line format"


EXIT_SCRIPT = """
import atexit, sys, threading, time
import polymodal.cli as cli
atexit.register(lambda: print("exit handler ran", flush=True))
sys.stdout.write("unflushed output")  # no newline, no flush: leave() must flush it
if "thread" in sys.argv:
    def late():
        time.sleep(0.3)
        print(" thread finished", flush=True)
    threading.Thread(target=late).start()
sys.argv = ["polymodal", *[arg for arg in sys.argv[1:] if arg != "thread"]]
cli.main()
"""


@pytest.mark.parametrize(
    ("args", "status", "expected"),
    [
        (["--help"], 0, ["unflushed output", "exit handler ran", "Usage: polymodal"]),
        (["train", "missing.csv", "--target", "x"], 2, ["missing.csv", "exit handler ran"]),
        (["--help", "thread"], 0, ["thread finished", "exit handler ran"]),
    ],
)
def test_the_command_line_leaves_without_losing_output_or_handlers(
    tmp_path, args, status, expected
):
    """The entry point skips the interpreter's teardown, never what it would have done for
    the user: exit handlers, buffered output, the status, a running thread's work."""
    result = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    text = result.stdout + result.stderr
    assert result.returncode == status, text
    for part in expected:
        assert part in text, text


def test_warnings_print_as_one_line():
    from polymodal.terminal import show_warning

    stream = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda *args, **kw: show_warning(*args[:4], file=stream)
        warnings.warn("a column is\n  mostly   empty", UserWarning, stacklevel=1)
    assert stream.getvalue() == "warning: a column is mostly empty\n"


@pytest.mark.parametrize(
    ("stop_reason", "says_so"),
    [("epochs", True), ("time", True), ("plateau", False)],
)
def test_the_summary_says_when_the_model_was_still_improving(stop_reason, says_so, monkeypatch):
    from rich.console import Console

    from polymodal import terminal

    monkeypatch.setattr(terminal, "out", Console(file=io.StringIO(), width=300))
    history = [{"epoch": epoch, "seconds": 1.0} for epoch in range(3)]
    metrics = {"history": history, "best_epoch": 2, "train_seconds": 3, "stop_reason": stop_reason}
    terminal.print_metrics(metrics)
    text = terminal.out.file.getvalue()
    assert "trained 3 epochs in 3 s; best epoch 2" in text
    assert ("still improving" in text and "--epochs" in text) == says_so
