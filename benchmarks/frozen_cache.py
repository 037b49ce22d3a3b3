"""The embedding cache at work: a frozen base-size text encoder, epoch 1 against epoch 2.

.venv/bin/python benchmarks/frozen_cache.py [--rows 2000] [--epochs 3] [--model FOLDER]

Reads MELD's training utterances (../shared/datasets/raw/meld) and trains Utterance + Speaker →
Emotion with a frozen BERT-base-size text encoder. With no network here, the encoder is BERT's
base architecture (12 layers, 768 wide) with random weights and a WordPiece vocabulary trained
on the utterances, saved like a hub download; `--model` takes a real local folder instead.
Accuracy is therefore not the point: time is.

Epoch 1 includes the embedding pass (the backbone over every row, once); later epochs train the
projection, fusion and heads on the cached embeddings. A second run on the same rows finds
every embedding on disk. Prints epoch times, the ratio, and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import DATASETS, machine, require

os.environ.setdefault("POLYMODAL_PROGRESS", "0")

from polymodal import Model  # noqa: E402
from polymodal.config import Config  # noqa: E402
from polymodal.data.cache import FeatureCache  # noqa: E402


def base_size_bert(folder: Path, texts: list[str]) -> Path:
    """BERT-base's architecture, random weights, a vocabulary learned from `texts`."""
    from tokenizers import BertWordPieceTokenizer, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=8000, show_progress=False)
    backend = wordpiece._tokenizer  # the tokenizers.Tokenizer inside
    ids = {token: backend.token_to_id(token) for token in ("[CLS]", "[SEP]")}
    backend.post_processor = processors.BertProcessing(
        ("[SEP]", ids["[SEP]"]), ("[CLS]", ids["[CLS]"])
    )
    special = {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]"}
    special |= {"sep_token": "[SEP]", "mask_token": "[MASK]"}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **special)
    tokenizer.save_pretrained(folder)
    BertModel(BertConfig(vocab_size=len(tokenizer))).save_pretrained(folder)
    return folder


def run(frame: pd.DataFrame, model_folder: Path, epochs: int, cache: FeatureCache) -> dict:
    config = Config.model_validate(
        {
            "model": {"encoders": {"Utterance": {"source": str(model_folder), "mode": "frozen"}}},
            "train": {"max_epochs": epochs, "patience": epochs},
        }
    )
    started = time.perf_counter()
    model = Model(target="Emotion", inputs=["Utterance", "Speaker"], config=config, cache=cache)
    model.fit(frame)
    metrics = model.metrics_
    history = metrics["history"]
    return {
        "embedding_s": metrics["embedding_seconds"],
        "epochs_s": [row["seconds"] for row in history],
        "epoch1_s": metrics["embedding_seconds"] + history[0]["seconds"],
        "accuracy": metrics["valid"]["Emotion"]["accuracy"],
        "wall_s": time.perf_counter() - started,
        "parameters": metrics["parameters"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None, help="a local transformers folder")
    args = parser.parse_args()
    table = require(DATASETS / "raw" / "meld" / "train_sent_emo.csv")
    frame = pd.read_csv(table).head(args.rows)[["Utterance", "Speaker", "Emotion"]]
    with tempfile.TemporaryDirectory(prefix="polymodal-frozen-") as scratch:
        scratch = Path(scratch)
        folder = args.model or base_size_bert(scratch / "bert-base", frame["Utterance"].tolist())
        cache = FeatureCache(scratch / "cache")
        cold = run(frame, folder, args.epochs, cache)
        warm = run(frame, folder, args.epochs, cache)
    print(machine())
    print(f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(
        f"MELD train, first {len(frame)} rows; Utterance (frozen {folder.name}) + Speaker → Emotion"
    )
    print(f"parameters in the model: {cold['parameters']:,}")
    for name, result in (("cold cache", cold), ("warm cache", warm)):
        epochs = ", ".join(f"{s:.2f}" for s in result["epochs_s"])
        print(
            f"{name}: embedding pass {result['embedding_s']:.1f} s; epoch seconds (training only) "
            f"{epochs}; epoch 1 with the embedding pass {result['epoch1_s']:.1f} s; "
            f"whole fit {result['wall_s']:.1f} s"
        )
    ratio = cold["epoch1_s"] / max(cold["epochs_s"][1], 1e-9)
    print(f"epoch 1 / epoch 2 (cold cache): {ratio:.1f}x  (acceptance: >= 5x)")
    print(
        f"embedding pass, cold / warm cache: {cold['embedding_s'] / max(warm['embedding_s'], 1e-9):.0f}x"
    )


if __name__ == "__main__":
    main()
