"""polymodal against a peer framework, Ludwig, on the same AV-MNIST split, in one run.

.venv/bin/python benchmarks/peers.py [--epochs N] [--fusions concat,attention]
                                     [--setups fbank40-stacked,fbank64-parallel]
                                     [--skip-polymodal] [--skip-ludwig]

polymodal runs with its defaults (`--epochs` sets its cap); Ludwig runs in two fair setups that
differ in the audio side (LUDWIG_SETUPS), each at most 15 epochs with early stopping after 5,
in batches of polymodal's default size for the table (128 here).
The verdict, per setup, is issue #16's: Ludwig's time at least 5x polymodal's, with polymodal's
test accuracy at least Ludwig's + 3 points.

Ludwig is a real install in its own virtual environment, `runs/peers/ludwig-venv`, made on the
first run (several minutes, about 8 GB: PyPI's torch wheels bring CUDA libraries) and reused
after. Its audio loading needs `torchcodec` in that environment and FFmpeg's shared libraries on
the machine (Debian: `apt-get install -y ffmpeg`); without them the Ludwig half is skipped with a
line that says what to install.

Both frameworks read AV-MNIST from ../shared/datasets with the same rows: the CSV's 1,000 test
rows, and its 9,000 train rows split about 8,100 / 900 into train / validation by polymodal's own
seeded rule. Ludwig gets a CSV of absolute paths with its `split` column (0 train, 1 validation,
2 test) under runs/peers/; the data itself is never copied. Both start cold: polymodal with an empty
feature cache, Ludwig without a preprocessed HDF5 cache. Training time is the wall clock of the
training command, decoding and preprocessing included; test accuracy is on split == test.
"""

from __future__ import annotations

import argparse
import ctypes.util
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from common import DATASETS, ROOT, machine, require

sys.path.insert(0, str(ROOT / "src"))

from polymodal.config import Config  # noqa: E402
from polymodal.data.schema import file_columns, resolve_inputs  # noqa: E402
from polymodal.data.table import read_table, split_rows  # noqa: E402

PEERS = ROOT / "runs" / "peers"
VENV = PEERS / "ludwig-venv"
DEFAULT_FUSION = Config().model.fusion
POLYMODAL = ROOT / ".venv" / "bin" / "polymodal"
LUDWIG_VERSION = "0.11.0"
# The recipe known to install on x86_64 with Python 3.11; torchcodec 0.9 is the one built for
# torch 2.9 (torchaudio 2.9 decodes through it).
INSTALL_STEPS = [
    ["torch==2.9.1", "torchvision==0.24.1"],
    ["torch==2.9.1", "torchaudio==2.9.*"],
    ["torch==2.9.1", "torchcodec==0.9.*"],
]
SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
LUDWIG_TIMEOUT_S = 40 * 60


@dataclass
class Result:
    """One framework's figures; `accuracy` and `seconds` are None when it did not finish."""

    framework: str
    fusion: str  # for Ludwig: concat and the setup's name
    accuracy: float | None
    seconds: float | None
    epochs: int | None = None
    note: str = ""


def run_logged(
    command: list[str], log: Path, timeout: float | None = None, **kwargs: object
) -> int | None:
    """Run a command with its output appended to `log`; the exit code, or None on timeout."""
    with log.open("a") as handle:
        handle.write(f"\n$ {shlex.join(command)}\n")
        handle.flush()
        try:
            completed = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout, **kwargs
            )
        except subprocess.TimeoutExpired:
            handle.write(f"\n[killed after {timeout:.0f} s]\n")
            return None
    return completed.returncode


def tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def shown(command: list[str]) -> str:
    """A command as printed: paths inside the project relative to its root."""
    return shlex.join(command).replace(f"{ROOT}/", "")


# --- Ludwig's environment ---------------------------------------------------------------------


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ludwig_version() -> str | None:
    """The version of Ludwig that imports in the venv, or None."""
    if not venv_python().exists():
        return None
    probe = subprocess.run(
        [str(venv_python()), "-c", "import ludwig; print(ludwig.__version__)"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def install_ludwig(log: Path) -> str | None:
    """Create the venv and install Ludwig with the known-good recipe; the version, or None."""
    print(f"installing Ludwig into {VENV.relative_to(ROOT)} (log: {log.relative_to(ROOT)})")
    if VENV.exists():
        shutil.rmtree(VENV)
    if run_logged([sys.executable, "-m", "venv", str(VENV)], log) != 0:
        return None
    pip = [str(venv_python()), "-m", "pip", "install"]
    for packages in INSTALL_STEPS:
        if run_logged(pip + packages, log) != 0:
            return None
    if run_logged(pip + ["torch==2.9.1", f"ludwig=={LUDWIG_VERSION}"], log) != 0:
        print(f"ludwig=={LUDWIG_VERSION} did not install; trying the newest that does")
        if run_logged(pip + ["torch==2.9.1", "ludwig"], log) != 0:
            return None
    return ludwig_version()


def ensure_ludwig() -> str | None:
    """Ludwig's version in a working venv, installing it if needed; None (and why) on failure."""
    PEERS.mkdir(parents=True, exist_ok=True)
    version = ludwig_version()
    if version:
        return version
    log = PEERS / "ludwig-install.log"
    version = install_ludwig(log)
    if version is None:
        print(f"Ludwig did not install; the end of {log.relative_to(ROOT)}:\n{tail(log)}")
    return version


AUDIO_PROBE = """
import sys
try:
    import torchcodec
except ModuleNotFoundError:
    sys.exit("torchcodec")
except Exception as error:
    sys.exit("ffmpeg: " + str(error).splitlines()[0])
import torchaudio
torchaudio.load(sys.argv[1])
"""


def missing_audio_support(sample: Path) -> list[str]:
    """What Ludwig's audio loading lacks here, each with how to install it; empty if nothing."""
    missing = []
    if not ctypes.util.find_library("avcodec"):
        missing.append(
            "FFmpeg's shared libraries (libavcodec, libavformat, libavutil) are not installed: "
            "install them with `apt-get install -y ffmpeg` (Debian/Ubuntu, as root)"
        )
    probe = subprocess.run(
        [str(venv_python()), "-c", AUDIO_PROBE, str(sample)], capture_output=True, text=True
    )
    reason = probe.stderr.strip().splitlines()[-1] if probe.returncode else ""
    pip = f"{VENV.relative_to(ROOT)}/bin/pip install torch==2.9.1 'torchcodec==0.9.*'"
    if reason == "torchcodec":
        missing.append(f"torchcodec is not installed in Ludwig's venv: install it with `{pip}`")
    elif reason.startswith("ffmpeg") and not missing:
        missing.append(
            f"torchcodec cannot load FFmpeg ({reason[8:]}): install FFmpeg with "
            f"`apt-get install -y ffmpeg`, and torchcodec built for torch 2.9 with `{pip}`"
        )
    elif probe.returncode and not missing:
        missing.append(f"torchaudio cannot read {sample}: {reason}")
    return missing


# --- the data -----------------------------------------------------------------------------------


def split_names(csv: Path) -> pd.Series:
    """train / valid / test for each row, exactly as `polymodal train` splits this table by
    default for these inputs (rows sharing an image or a recording stay on one side)."""
    table = read_table(csv)
    config = Config(inputs=["image", "audio"])
    together = file_columns(resolve_inputs(table, config, ["label"]), config)
    settings = config.train
    names = pd.Series("", index=table.frame.index)
    for name, rows in split_rows(table, settings.valid_fraction, settings.seed, together).items():
        names.iloc[rows] = name
    return names


def write_ludwig_csv(csv: Path, out: Path) -> dict[str, int]:
    """Ludwig's copy of the table: absolute file paths and a 0/1/2 split column; the counts."""
    frame = pd.read_csv(csv)
    names = split_names(csv)
    ludwig = pd.DataFrame(
        {
            "image": [str((csv.parent / path).resolve()) for path in frame["image"]],
            "audio": [str((csv.parent / path).resolve()) for path in frame["audio"]],
            "label": frame["label"],
            "split": names.map(SPLIT_CODES),
        }
    )
    ludwig.to_csv(out, index=False)
    return {name: int((names == name).sum()) for name in SPLIT_CODES}


LUDWIG_EPOCHS = 15  # both setups: 15 epochs at most, early stop after 5 without improvement
# Two fair setups, both from-scratch CNNs with concat fusion; they differ in the audio side.
# "fbank40-stacked" is the one of issue #16 (a stacked CNN over 40-band fbank features at
# 25 / 10 ms windows, the image at 28 x 28 x 1); "fbank64-parallel" is our first setup.
LUDWIG_SETUPS = {
    "fbank40-stacked": {"encoder": "stacked_cnn", "bands": 40},
    "fbank64-parallel": {"encoder": "parallel_cnn", "bands": 64},
}


def ludwig_batch(train_rows: int) -> int:
    """polymodal's default batch size for this many training rows: Ludwig trains with the
    same batches (its own default, `auto`, tunes up to 128 on a CPU)."""
    return Config().train.for_rows(train_rows).batch_size


def ludwig_config(setup: str, epochs: int, batch: int) -> dict:
    """From-scratch encoders for both inputs, concat fusion, polymodal's batch, early stop 5."""
    audio = LUDWIG_SETUPS[setup]
    return {
        "input_features": [
            {
                "name": "image",
                "type": "image",
                "encoder": {"type": "stacked_cnn"},
                "preprocessing": {"height": 28, "width": 28, "num_channels": 1},
            },
            {
                "name": "audio",
                "type": "audio",
                "encoder": {"type": audio["encoder"]},
                "preprocessing": {
                    "type": "fbank",
                    "audio_file_length_limit_in_s": 1.0,
                    "window_length_in_s": 0.025,
                    "window_shift_in_s": 0.01,
                    "num_filter_bands": audio["bands"],
                    "norm": "per_file",
                },
            },
        ],
        "output_features": [{"name": "label", "type": "category"}],
        "combiner": {"type": "concat"},
        "preprocessing": {"split": {"type": "fixed", "column": "split"}},
        "trainer": {
            "epochs": epochs,
            "batch_size": batch,
            "early_stop": 5,
            "validation_field": "label",
            "validation_metric": "accuracy",
        },
    }


# --- the two frameworks -------------------------------------------------------------------------


def run_polymodal(csv: Path, fusion: str, epochs: int | None) -> tuple[Result, list[str]]:
    """Train polymodal from a cold feature cache; its figures and the command."""
    out = PEERS / f"polymodal-{fusion}"
    command = [str(POLYMODAL), "train", str(csv), "--target", "label", "--inputs", "image,audio"]
    if fusion != DEFAULT_FUSION:
        command += ["--fusion", fusion]
    command += ["--out", str(out.relative_to(ROOT)), "--overwrite", "--no-report"]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    log = PEERS / f"polymodal-{fusion}.log"
    log.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="polymodal-cache-") as cache:
        env = {**os.environ, "POLYMODAL_CACHE": cache, "POLYMODAL_PROGRESS": "0"}
        started = time.perf_counter()
        code = run_logged(command, log, cwd=ROOT, env=env)
        seconds = time.perf_counter() - started
    if code != 0:
        note = f"failed (exit {code}); see {log.relative_to(ROOT)}"
        print(f"polymodal {fusion} {note}:\n{tail(log)}")
        return Result("polymodal", fusion, None, None, note=note), command
    metrics = json.loads((out / "metrics.json").read_text())
    accuracy = metrics["test"]["label"]["accuracy"]
    return Result("polymodal", fusion, accuracy, seconds, len(metrics.get("history", []))), command


def ludwig_epochs(output: Path) -> int | None:
    """Epochs Ludwig ran, from its training statistics."""
    stats = output / "training_statistics.json"
    if not stats.exists():
        return None
    validation = json.loads(stats.read_text()).get("validation", {})
    return len(validation.get("label", {}).get("accuracy", [])) or None


def run_ludwig(csv: Path, setup: str, timeout: float) -> tuple[Result, list[list[str]]]:
    """Preprocess, train and evaluate one Ludwig setup on the test split; figures, commands."""
    dataset = PEERS / "avmnist-ludwig.csv"
    counts = write_ludwig_csv(csv, dataset)
    print(f"Ludwig table {dataset.relative_to(ROOT)}: {counts}")
    for cached in dataset.parent.glob(f"{dataset.stem}.*"):
        if cached != dataset:  # a previous run's preprocessed cache: .hdf5, .meta.json, .parquet
            cached.unlink()
    config = PEERS / f"ludwig-{setup}.yaml"
    settings = ludwig_config(setup, LUDWIG_EPOCHS, ludwig_batch(counts["train"]))
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    results = PEERS / f"ludwig-{setup}"
    shutil.rmtree(results, ignore_errors=True)
    ludwig = str(VENV / "bin" / "ludwig")
    train = [ludwig, "train", "--config", str(config), "--dataset", str(dataset)]
    train += ["--output_directory", str(results), "--experiment_name", "avmnist"]
    train += ["--model_name", "concat", "--skip_save_processed_input"]
    output = results / "avmnist_concat"
    evaluate = [ludwig, "evaluate", "--model_path", str(output / "model"), "--dataset"]
    evaluate += [str(dataset), "--split", "test", "--output_directory", str(results / "test")]
    evaluate += ["--skip_save_unprocessed_output"]
    log = PEERS / f"ludwig-{setup}.log"
    log.unlink(missing_ok=True)
    fusion = f"concat, {setup}"
    started = time.perf_counter()
    code = run_logged(train, log, timeout=timeout, cwd=PEERS)
    seconds = time.perf_counter() - started
    if code != 0:
        note = (
            f"killed after {timeout / 60:.0f} min"
            if code is None
            else f"training failed (exit {code}); see {log.relative_to(ROOT)}"
        )
        print(f"Ludwig {note}:\n{tail(log)}")
        return Result("Ludwig", fusion, None, None, note=note), [train, evaluate]
    code = run_logged(evaluate, log, cwd=PEERS)
    stats = results / "test" / "test_statistics.json"
    if code != 0 or not stats.exists():
        note = f"evaluation failed (exit {code}); see {log.relative_to(ROOT)}"
        print(f"Ludwig {note}:\n{tail(log)}")
        return Result("Ludwig", fusion, None, seconds, note=note), [train, evaluate]
    accuracy = json.loads(stats.read_text())["label"]["accuracy"]
    return Result("Ludwig", fusion, accuracy, seconds, ludwig_epochs(output)), [train, evaluate]


# --- the report ---------------------------------------------------------------------------------


ROW = "{:<10} {:<26} {:>13} {:>12} {:>6}"


def print_table(results: list[Result]) -> None:
    print(ROW.format("framework", "fusion", "test accuracy", "train wall s", "epochs"))
    for result in results:
        accuracy = f"{result.accuracy:.4f}" if result.accuracy is not None else "-"
        seconds = f"{result.seconds:.0f}" if result.seconds is not None else "-"
        epochs = str(result.epochs) if result.epochs else "-"
        line = ROW.format(result.framework, result.fusion, accuracy, seconds, epochs)
        print(f"{line}  {result.note}".rstrip())


SPEED_GOAL = 5.0  # Ludwig's time / polymodal's time, issue #16
ACCURACY_MARGIN = 0.03  # polymodal's test accuracy at least Ludwig's + 3 points


def print_verdict(results: list[Result]) -> None:
    """Per Ludwig setup: its time / polymodal's and PASS/FAIL for polymodal's default model (its
    default fusion, concat, is also Ludwig's here, so this compares like with like)."""
    ours = next(
        (r for r in results if r.framework == "polymodal" and r.fusion == DEFAULT_FUSION), None
    )
    for peer in (r for r in results if r.framework == "Ludwig"):
        figures = [peer.accuracy, peer.seconds] + ([ours.accuracy, ours.seconds] if ours else [])
        if ours is None or any(value is None for value in figures):
            print(f"{peer.fusion}: n/a (needs this Ludwig run and polymodal {DEFAULT_FUSION})")
            continue
        ratio = peer.seconds / ours.seconds
        margin = ours.accuracy - peer.accuracy
        accurate, fast = margin >= ACCURACY_MARGIN - 1e-9, ratio >= SPEED_GOAL
        print(
            f"Ludwig {peer.fusion}: {'PASS' if accurate and fast else 'FAIL'}; time ratio "
            f"Ludwig / polymodal {ratio:.2f}x ({'>=' if fast else '<'} {SPEED_GOAL:g}x), "
            f"accuracy {ours.accuracy:.4f} vs {peer.accuracy:.4f}: {100 * margin:+.1f} points "
            f"({'>=' if accurate else '<'} +{100 * ACCURACY_MARGIN:g})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="polymodal's epoch cap")
    parser.add_argument(
        "--setups", default=",".join(LUDWIG_SETUPS), help="Ludwig setups to run, comma-separated"
    )
    parser.add_argument("--fusions", default="concat,attention", help="polymodal fusions to run")
    parser.add_argument("--skip-polymodal", action="store_true")
    parser.add_argument("--skip-ludwig", action="store_true")
    parser.add_argument("--ludwig-timeout", type=float, default=LUDWIG_TIMEOUT_S / 60)
    args = parser.parse_args()
    csv = require(DATASETS / "avmnist" / "avmnist.csv").resolve()
    PEERS.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    commands: list[list[str]] = []
    version, missing = None, []
    if not args.skip_ludwig:  # install before any timing, so nothing else runs meanwhile
        version = ensure_ludwig()
        missing = missing_audio_support(csv.parent / "audio" / "0_george_0.wav") if version else []
        for line in missing:
            print(f"missing for Ludwig: {line}")
    if not args.skip_polymodal:
        for fusion in args.fusions.split(","):
            result, command = run_polymodal(csv, fusion.strip(), args.epochs)
            results.append(result)
            commands.append(command)
    if not args.skip_ludwig:
        for setup in args.setups.split(","):
            if version and not missing:
                result, ran = run_ludwig(csv, setup.strip(), args.ludwig_timeout * 60)
                results.append(result)
                commands += ran
            else:
                note = "not installed" if version is None else "audio support missing"
                results.append(Result("Ludwig", f"concat, {setup}", None, None, note=note))
    print()
    print(machine())
    print(f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    cap = args.epochs or Config().train.max_epochs
    print(f"AV-MNIST ({csv}), cold caches; polymodal: defaults, epoch cap {cap}")
    batch = ludwig_batch(int((split_names(csv) == "train").sum()))
    print(f"Ludwig: batch {batch} (polymodal's), max {LUDWIG_EPOCHS} epochs, early stop 5")
    print(f"Ludwig {version or 'not run'} in {VENV.relative_to(ROOT)}")
    print("commands:")
    for command in commands:
        print(f"  {shown(command)}")
    print_table(results)
    print_verdict(results)


if __name__ == "__main__":
    main()
