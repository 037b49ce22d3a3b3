"""Audio-visual digit speech: WER per noise kind and SNR for audio only, video only, audio +
video (polymodal) and pocketsphinx, on the table `build_avdigits.py` writes.

Each polymodal model trains on the training utterances (every one in a random condition) and
is scored on the same 300 test utterances in every condition (clean, white and babble noise
at 10 to -10 dB). The video stream carries no noise, so the video-only model is scored once on
the test utterances and its WER stands in every row. Beam 4 is scored beside greedy on the
audio + video model. pocketsphinx's figures are read from `pocketsphinx_peer.py`'s JSON when it
has been run.

    .venv/bin/python benchmarks/build_avdigits.py
    .venv/bin/python benchmarks/pocketsphinx_peer.py [--utterances 84]  # all 3,300 files: ~4 h
    .venv/bin/python -m benchmarks.avdigits --epochs 100 --patience 8 --augment \
        --modality-dropout video=0.5,audio=0.1 --max-minutes 78 --setups audio+video \
        --audio-encoder audio_cnn_fine --memory-layers 1   # BENCHMARKS.md's latest audio + video

With the peer run on `--utterances N`, a second table scores polymodal's models on those N
utterances beside pocketsphinx.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from benchmarks.common import ROOT, machine, require
from polymodal import Model
from polymodal.config import Config
from polymodal.options import parse_modality_dropout
from polymodal.tasks.text.metrics import word_error_rate

DATA = ROOT / "benchmarks" / "data" / "avdigits"
SETUPS = {"audio": ["audio"], "video": ["video"], "audio+video": ["audio", "video"]}


def text_options(args: argparse.Namespace) -> dict:
    """The text target's options: a 2-layer decoder, and the memory encoder's depth if given."""
    options = {"layers": 2}
    if args.memory_layers is not None:
        options["memory_layers"] = args.memory_layers
    return options


def config(inputs: list[str], args: argparse.Namespace) -> Config:
    return Config.model_validate(
        {
            "targets": [{"column": "text", "task": "text", "options": text_options(args)}],
            "inputs": inputs,
            "columns": {"audio": {"kind": "audio"}, "video": {"kind": "video"}},
            "preprocess": {"video": {"fps": args.fps, "size": args.size}},
            "model": {"encoders": {"audio": args.audio_encoder}},
            "train": {
                "max_epochs": args.epochs,
                "patience": args.patience,
                "augment": args.augment,
                "modality_dropout": args.modality_dropout,
                "seed": args.seed,
                "max_time": args.max_minutes and str(args.max_minutes),
            },
        }
    )


def wer_by_condition(test: pd.DataFrame, predicted: list[str]) -> dict[str, float]:
    scored = test.assign(predicted=predicted)
    return {
        condition: word_error_rate(rows["text"].tolist(), rows["predicted"].tolist())
        for condition, rows in scored.groupby("condition", sort=False)
    }


def run_setup(
    name: str,
    train: pd.DataFrame,
    test: pd.DataFrame,
    args: argparse.Namespace,
    peer_utterances: list[str] | None,
) -> dict:
    """Train one setup, score greedy (and beam for audio + video) per condition; with
    `peer_utterances`, also on only those (the ones pocketsphinx decoded)."""
    settings = config(SETUPS[name], args)
    started = time.perf_counter()
    model = Model(config=settings).fit(
        train, out=args.out / name, overwrite=not args.resume, resume=args.resume
    )
    seconds = time.perf_counter() - started
    scored = test if "audio" in SETUPS[name] else test[test["condition"] == "clean"]
    started = time.perf_counter()
    greedy = model.predict(scored)["text_predicted"].tolist()
    predict_seconds = time.perf_counter() - started
    result = {
        "train_seconds": round(seconds, 1),
        "epochs": len(model.metrics_["history"]),
        "best_epoch": model.metrics_["best_epoch"],
        "predict_seconds": round(predict_seconds, 1),
        "wer": wer_by_condition(scored, greedy),
    }
    if peer_utterances:
        same = scored["utterance"].isin(peer_utterances).to_numpy()
        kept = [text for text, keep in zip(greedy, same, strict=True) if keep]
        result["wer_peer_utterances"] = wer_by_condition(scored[same], kept)
    if name == "audio+video" and args.beam > 1:
        model.set_decoding(beam=args.beam)
        started = time.perf_counter()
        beams = model.predict(scored)["text_predicted"].tolist()
        result["beam_predict_seconds"] = round(time.perf_counter() - started, 1)
        result[f"wer_beam{args.beam}"] = wer_by_condition(scored, beams)
    print(name, json.dumps(result), flush=True)
    return result


def cell(figures: dict, condition: str) -> str:
    """A WER from {condition: WER}; a setup scored only clean (video) stands in every row."""
    return f"{figures.get(condition, figures.get('clean', float('nan'))):.3f}"


def table(results: dict, conditions: list[str], peer: dict | None, beam: int) -> str:
    """All 300 test utterances for polymodal; with pocketsphinx, a second block on the
    utterances it decoded, polymodal and pocketsphinx side by side."""
    columns = ["audio", "video", "audio+video"]
    header = ["condition", *(f"{c} WER" for c in columns), f"audio+video beam {beam}"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for condition in conditions:
        cells = [condition] + [cell(results.get(c, {}).get("wer", {}), condition) for c in columns]
        cells.append(cell(results.get("audio+video", {}).get(f"wer_beam{beam}", {}), condition))
        lines.append("| " + " | ".join(cells) + " |")
    if not peer:
        return "\n".join(lines)
    count = len(peer["utterances"])
    header = ["condition", *(f"{c} WER" for c in columns), "pocketsphinx default",
              "pocketsphinx digits grammar"]  # fmt: skip
    lines += ["", f"The first {count} test utterances (those pocketsphinx decoded):", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for condition in conditions:
        cells = [condition]
        cells += [cell(results.get(c, {}).get("wer_peer_utterances", {}), condition) for c in columns]  # fmt: skip
        cells += [cell(peer["wer"][setup], condition) for setup in ("default", "grammar")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pocketsphinx_figures(path: Path) -> dict | None:
    """{"wer": {setup: {condition: WER}}, "utterances": [...]} from pocketsphinx_peer.py's
    JSON, if it was run."""
    if not path.is_file():
        return None
    document = json.loads(path.read_text())
    return {
        "wer": {setup: document["wer"][setup] for setup in ("default", "grammar")},
        "utterances": document["utterances"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", type=Path, default=DATA / "avdigits.csv")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train-rows", type=int, default=None, help="default: all")
    parser.add_argument("--patience", type=int, default=8, help="epochs without a better WER")
    parser.add_argument("--augment", action="store_true", help="SpecAugment-style masks etc.")
    parser.add_argument(
        "--modality-dropout",
        type=parse_modality_dropout,
        default=0.0,
        help="chance an input is hidden per row: one for both, or audio=P,video=Q",
    )
    parser.add_argument(
        "--fps",
        type=float,
        default=25.0,
        help="video frames read per second: the files' own 25 (at 10, a pause between two "
        "identical digits can fall between frames)",
    )
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument(
        "--audio-encoder", default="audio_cnn", help="audio_cnn_fine: a token per 40 ms, not 80"
    )
    parser.add_argument(
        "--memory-layers", type=int, default=None, help="the text target's; default: its default"
    )
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=None, help="per model's training")
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "avdigits")
    parser.add_argument(
        "--resume", action="store_true", help="continue each setup's stopped run in --out"
    )
    parser.add_argument("--peer", type=Path, default=DATA / "pocketsphinx" / "wer.json")
    args = parser.parse_args()
    frame = pd.read_csv(require(args.csv), keep_default_na=False)
    base = args.csv.parent
    for column in ("audio", "video"):
        frame[column] = [str(base / path) for path in frame[column]]
    train = frame[frame["split"] == "train"].drop(columns=["split"])
    if args.train_rows:
        train = train.sample(n=args.train_rows, random_state=args.seed).sort_index()
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    print(machine())
    print(f"{len(train)} training utterances, {test['utterance'].nunique()} test utterances "
          f"x {test['condition'].nunique()} conditions")  # fmt: skip
    peer = pocketsphinx_figures(args.peer)
    results = {}
    for name in args.setups.split(","):
        results[name] = run_setup(name, train, test, args, peer and peer["utterances"])
    conditions = list(dict.fromkeys(test["condition"]))
    print(table(results, conditions, peer, args.beam))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"polymodal": results, "pocketsphinx": peer}, indent=1)
    )


if __name__ == "__main__":
    main()
