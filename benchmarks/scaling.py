"""How polymodal scales with rows: decode time, epoch time, samples/s, peak memory, disk use.

    .venv/bin/python benchmarks/scaling.py [--sizes 10000 50000 200000] [--epochs 2]

Builds AV-MNIST-like tables of each size from ../shared/datasets/avmnist in which every file is
distinct: row i takes AV-MNIST row i mod 10,000 and perturbs its picture (pixel noise of up to
±8 grey levels) and its recording (a gain of ±10 % and noise 40 dB below the signal), both
seeded by i, so no two rows share bytes and the feature cache cannot short-cut a row. The
label and the train/test split are the source row's.

For each size, every figure comes from a child process:
- `Model.prepare` with `train.workers` 2 and an empty feature cache, timed in the child after
  its imports: the decode time; on the sizes in --serial-sizes, --rounds rounds of 2 workers
  then 1, the speed-up taken within each round (the machine's speed drifts);
- `polymodal train TABLE --target label --epochs E --no-report` with the cache the prepare
  left: peak resident memory (the child's and its decode workers', from wait4), test accuracy;
  on the smallest table also with `--devices 2 --strategy ddp`;
- then --rounds rounds in which every size trains from its prepared folder in turn: seconds
  per training row of the last epoch (median over rounds), and samples per second;
- disk: the table's files, the prepared folder, the feature cache.

Tables, caches and prepared folders are written under --workdir (default
/tmp/polymodal-scaling); media and caches are removed once a size is measured, the rest at
the end, unless --keep.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile
from common import DATASETS, ROOT, machine, require
from PIL import Image

POLYMODAL = [str(Path(sys.executable).parent / "polymodal")]
SOURCE = DATASETS / "avmnist"


# ------------------------------------------------------------------- the tables
def build_table(rows: int, folder: Path) -> Path:
    """`folder/data.csv` with `rows` rows of distinct files (see the module docstring)."""
    table = folder / "data.csv"
    if table.is_file():
        return table
    source = pd.read_csv(require(SOURCE / "avmnist.csv"))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    jobs = [(start, min(rows, start + 2000), str(folder)) for start in range(0, rows, 2000)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for _ in pool.imap_unordered(_write_rows, jobs):
            pass
    origin = source.iloc[np.arange(rows) % len(source)].reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "image": [f"images/{i:06d}.png" for i in range(rows)],
            "audio": [f"audio/{i:06d}.wav" for i in range(rows)],
            "label": origin["label"],
            "split": origin["split"],
        }
    )
    frame.to_csv(table.with_suffix(".tmp"), index=False)
    os.replace(table.with_suffix(".tmp"), table)
    return table


def _write_rows(job: tuple[int, int, str]) -> None:
    start, stop, folder = job
    source = pd.read_csv(SOURCE / "avmnist.csv")
    for row in range(start, stop):
        origin = source.iloc[row % len(source)]
        rng = np.random.default_rng(row)
        pixels = np.asarray(Image.open(SOURCE / origin["image"]).convert("L"), dtype=np.int16)
        pixels = np.clip(pixels + rng.integers(-8, 9, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(f"{folder}/images/{row:06d}.png")
        wave, rate = soundfile.read(SOURCE / origin["audio"], dtype="float32")
        loudness = float(np.sqrt(np.mean(wave**2))) or 1e-3
        wave = wave * rng.uniform(0.9, 1.1) + rng.normal(0, loudness * 0.01, wave.shape)
        soundfile.write(f"{folder}/audio/{row:06d}.wav", np.clip(wave, -1, 1), rate, "PCM_16")


# ----------------------------------------------------------------- measurements
def run(command: list[str], cache: Path) -> tuple[float, float, str]:
    """(seconds, peak resident MiB of the child and its descendants, output) of a command."""
    env = {**os.environ, "POLYMODAL_CACHE": str(cache), "POLYMODAL_PROGRESS": "0"}
    started = time.perf_counter()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT
    ) as child:
        output = child.stdout.read().decode(errors="replace")
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if child.returncode:
        sys.exit(f"{' '.join(command)} failed ({child.returncode}):\n{output[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, output


def megabytes(path: Path) -> float:
    """Disk used under `path`, as `du` counts it (allocated blocks)."""
    done = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[0]) / 1024


# `polymodal prepare`, timed inside the child: the interpreter's start and imports (about
# 10 s here) are the same for any number of workers and rows, and would hide the decoding.
PREPARE = """
import sys, time
from polymodal.config import Config
from polymodal.model import Model
config = Config.model_validate({"train": {"workers": int(sys.argv[3])}})
model = Model(target="label", config=config)
started = time.perf_counter()
model.prepare(sys.argv[1], sys.argv[2])
print("prepared in", time.perf_counter() - started)
"""


def prepare_seconds(table: Path, work: Path, workers: int) -> tuple[float, float, float]:
    """(seconds, peak MiB, prepared folder MiB) of preparing with an empty cache."""
    cache, out = work / f"cache-prepare-{workers}", work / f"prepared-{workers}"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-c", PREPARE, str(table), str(out), str(workers)]
    _, peak, output = run(command, cache)
    seconds = float(output.split("prepared in")[-1].split()[0])
    return seconds, peak, megabytes(out)


def train(data: Path, work: Path, cache: Path, epochs: int, devices: int = 1) -> dict:
    """`polymodal train` of a table (`--target label`) or a prepared folder, in a child."""
    out = work / f"model-{devices}"
    shutil.rmtree(out, ignore_errors=True)
    command = [*POLYMODAL, "train", str(data), "--out", str(out)]
    command += ["--epochs", str(epochs), "--no-report"]
    if data.is_file():
        command += ["--target", "label"]
    if devices > 1:
        command += ["--devices", str(devices), "--strategy", "ddp"]
    seconds, peak, _ = run(command, cache)
    metrics = json.loads((out / "metrics.json").read_text())
    last = metrics["history"][-1]
    train_rows = sum(last.get("train_rows", [metrics["rows"]["train"]]))
    return {
        "seconds": seconds,
        "peak_mib": peak,
        "epoch_s": last["seconds"],
        "train_rows": train_rows,
        "samples_per_s": train_rows / last["seconds"],
        "us_per_row": 1e6 * last["seconds"] / train_rows,
        "accuracy": metrics["test"]["label"]["accuracy"],
    }


def measure(rows: int, args: argparse.Namespace) -> dict:
    """Decode (rounds of 2 workers then 1), then train from the table with the warm cache.
    Keeps the table and the prepared folder for the epoch rounds; removes media and caches."""
    work = args.workdir / f"{rows}"
    started = time.perf_counter()
    table = build_table(rows, work)
    print(f"[{rows}] table built in {time.perf_counter() - started:.0f} s", flush=True)
    result: dict = {
        "rows": rows,
        "media_mb": megabytes(work / "images") + megabytes(work / "audio"),
        "decode_2_s": [],
        "decode_1_s": [],
    }
    for _ in range(args.rounds if rows in args.serial_sizes else 1):
        seconds, peak, prepared_mb = prepare_seconds(table, work, workers=2)
        result |= {"prepare_peak_mib": peak, "prepared_mb": prepared_mb}
        result["decode_2_s"].append(seconds)
        print(f"[{rows}] prepare, 2 workers: {seconds:.1f} s, peak {peak:.0f} MiB", flush=True)
        if rows in args.serial_sizes:
            seconds, _, _ = prepare_seconds(table, work, workers=1)
            result["decode_1_s"].append(seconds)
            print(f"[{rows}] prepare, 1 worker: {seconds:.1f} s", flush=True)
    cache = work / "cache-prepare-2"
    result["cache_mb"] = megabytes(cache)
    result |= train(table, work, cache, args.epochs)
    print(f"[{rows}] train: {json.dumps(result)}", flush=True)
    if rows == min(args.sizes) and args.ddp:
        result["ddp"] = train(table, work, cache, args.epochs, devices=2)
        print(f"[{rows}] train on 2 processes: {json.dumps(result['ddp'])}", flush=True)
    for name in ("images", "audio", "cache-prepare-1", "cache-prepare-2", "prepared-1"):
        if not args.keep:
            shutil.rmtree(work / name, ignore_errors=True)
    return result


def epoch_rounds(results: list[dict], args: argparse.Namespace) -> None:
    """Seconds per training row, every size trained from its prepared folder in turn, round
    after round: this machine's speed drifts from minute to minute, so sizes measured
    minutes apart would compare the machine, not polymodal."""
    for result in results:
        result["epoch_us"] = []
    for round_number in range(args.rounds):
        for result in results:
            work = args.workdir / f"{result['rows']}"
            trained = train(work / "prepared-2", work, work / "cache-epochs", args.epochs)
            result["epoch_us"].append(trained["us_per_row"])
            print(
                f"[{result['rows']}] round {round_number + 1}: "
                f"{trained['us_per_row']:.0f} µs a training row",
                flush=True,
            )


def print_tables(results: list[dict], epochs: int) -> None:
    base = results[0]
    print(f"\n{machine()}; {epochs} epochs, figures of the last one; medians over rounds\n")
    print(
        "| rows | decode s (2 workers) | decode s (1 worker) | speed-up | µs/row (rounds) "
        "| µs/row | vs smallest | samples/s | peak MiB (train) | vs smallest "
        "| peak MiB (prepare) | media MB | prepared MB | cache MB | test acc |"
    )
    print("|" + "---|" * 15)
    base_us = np.median(base["epoch_us"])
    for r in results:
        ratios = [one / two for one, two in zip(r["decode_1_s"], r["decode_2_s"], strict=False)]
        serial = f"{np.median(r['decode_1_s']):.1f}" if r["decode_1_s"] else ""
        rounds = ", ".join(f"{x:.2f}" for x in ratios)
        speedup = f"{np.median(ratios):.2f}× ({rounds})" if ratios else ""
        us = np.median(r["epoch_us"])
        print(
            f"| {r['rows']:,} | {np.median(r['decode_2_s']):.1f} | {serial} "
            f"| {speedup} | {', '.join(f'{x:.0f}' for x in r['epoch_us'])} "
            f"| {us:.0f} | {us / base_us:.2f}× | {1e6 / us:.0f} | {r['peak_mib']:.0f} "
            f"| {r['peak_mib'] / base['peak_mib']:.2f}× | {r['prepare_peak_mib']:.0f} "
            f"| {r['media_mb']:.0f} | {r['prepared_mb']:.0f} | {r['cache_mb']:.0f} "
            f"| {r['accuracy']:.3f} |"
        )
    if "ddp" in base:
        one, two = base, base["ddp"]
        print(f"\n1 against 2 training processes, {base['rows']:,} rows (from the table)\n")
        print("| processes | rows per process | epoch s | samples/s | wall s | test acc |")
        print("|---|---|---|---|---|---|")
        print(
            f"| 1 | {one['train_rows']:,} | {one['epoch_s']:.1f} | {one['samples_per_s']:.0f} "
            f"| {one['seconds']:.0f} | {one['accuracy']:.3f} |"
        )
        print(
            f"| 2 | {two['train_rows'] // 2:,} | {two['epoch_s']:.1f} | "
            f"{two['samples_per_s']:.0f} | {two['seconds']:.0f} | {two['accuracy']:.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--serial-sizes", type=int, nargs="*", default=[10_000, 50_000])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternating timing rounds")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/polymodal-scaling"))
    parser.add_argument("--no-ddp", dest="ddp", action="store_false")
    parser.add_argument("--keep", action="store_true", help="keep the tables and caches")
    args = parser.parse_args()
    args.sizes.sort()
    results = [measure(rows, args) for rows in args.sizes]
    epoch_rounds(results, args)
    print_tables(results, args.epochs)
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
