"""Music targets on the music21 corpus: a polymodal model that writes melodies conditioned on
key, mode, metre and collection, against a smoothed n-gram (Markov) model of the same tokens.

The table is built from the corpus that ships with music21: Bach's chorales (the soprano) and
two folk-song collections (the Essen folk songs, German; Ryan's Mammoth Collection, Irish and
Scottish dance tunes). Each piece's first part is written as MusicXML under --out; its key
and mode (music21's Krumhansl analysis), metre and collection are the input columns. Pieces
are split into train / valid / held-out (test) rows at random, seeded.

Printed: held-out NLL per note (nats per note or rest) of polymodal and of the n-gram (its
order chosen on the valid rows), over every token and over the melody alone (the key and
metre tokens given); then for pieces generated for the held-out rows' conditions (polymodal,
and the n-gram given the row's key and metre tokens) and for the held-out pieces themselves:
the share of notes in the key, the share of bars that fill the metre, and total-variation
distances of pitch-class and duration histograms to the held-out pieces (and, as a scale,
the training pieces' distance to them). Ten generated pieces are rendered to WAV.

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.music --out /tmp/music   # 40 minutes on 2 busy cores
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.common import machine
from polymodal import Model
from polymodal.config import Config
from polymodal.data.table import read_table
from polymodal.tasks import encode_targets
from polymodal.tasks.music import metrics
from polymodal.tasks.music.task import music_text
from polymodal.tasks.music.tokens import MusicError, Piece, parse_tokens
from polymodal.training.batches import TensorBatches

HEADER = 2  # Key and TimeSig tokens open every piece
ESSEN = ("altdeu", "ballad", "boehme", "erk", "fink", "kinder", "dva", "zuccal")


# ------------------------------------------------------------------ the corpus table
def corpus_pieces(per_collection: int) -> list[tuple[str, str, object]]:
    """(collection, name, first part) of up to `per_collection` pieces per collection."""
    from music21 import converter, corpus

    chorales = corpus.chorales.Iterator(numberingSystem="riemenschneider", returnType="filename")
    names = list(chorales)[:per_collection]
    pieces = [("bach chorale", name, corpus.parse(name)) for name in names]
    paths = [str(p) for p in corpus.getPaths()]
    essen = sorted(p for p in paths if "essenFolksong" in p and Path(p).stem.startswith(ESSEN))
    tunes: list[tuple[str, str, object]] = []
    for path in essen:
        if len(tunes) >= per_collection:
            break
        scores = converter.parse(path).scores
        tunes += [("essen folk", f"{Path(path).stem}-{i}", s) for i, s in enumerate(scores)]
    pieces += tunes[:per_collection]
    ryans = sorted(p for p in paths if "ryansMammoth" in p)[:per_collection]
    pieces += [("ryans mammoth", Path(p).stem, converter.parse(p)) for p in ryans]
    return [(c, n, s.parts[0] if getattr(s, "parts", None) else s) for c, n, s in pieces]


def build_table(out: Path, per_collection: int, max_bars: int, seed: int) -> Path:
    """Write each piece's melody as MusicXML and the table of conditions; returns its path."""
    table = out / "corpus.csv"
    if table.exists():
        return table
    rows = []
    folder = out / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    for number, (collection, name, part) in enumerate(corpus_pieces(per_collection)):
        path = folder / f"{number:04d}.musicxml"
        try:
            part.write("musicxml", fp=str(path))
            header = parse_tokens(music_text(str(path), max_bars))
        except (MusicError, OSError, ValueError) as error:
            print(f"skipped {collection} {name}: {error}")
            continue
        metre = f"{header.metre[0]}/{header.metre[1]}"
        rows.append(
            {"tune": path.relative_to(out).as_posix(), "key": header.tonic, "mode": header.mode,
             "metre": metre, "collection": collection, "name": name}
        )  # fmt: skip
    frame = pd.DataFrame(rows)
    draw = np.random.default_rng(seed).random(len(frame))
    frame["split"] = np.where(draw < 0.7, "train", np.where(draw < 0.8, "valid", "test"))
    frame.to_csv(table, index=False)
    return table


# ------------------------------------------------------------------- the n-gram
class NGram:
    """Interpolated Witten-Bell n-gram over token ids: each order's estimate is mixed with the
    next lower one's in proportion to how many distinct tokens followed the context; order 0
    is add-one over the vocabulary."""

    def __init__(self, order: int, vocab: int) -> None:
        self.order, self.vocab = order, vocab
        self.counts: dict[tuple, Counter] = defaultdict(Counter)
        self.memo: dict[tuple, np.ndarray] = {}

    def fit(self, pieces: list[list[int]]) -> NGram:
        for piece in pieces:
            for t in range(1, len(piece)):
                for n in range(self.order):
                    if t - n >= 0:
                        self.counts[tuple(piece[t - n : t])][piece[t]] += 1
        return self

    def distribution(self, context: tuple) -> np.ndarray:
        """P(next token | the last order - 1 tokens of `context`), over the vocabulary."""
        context = context[len(context) - self.order + 1 :] if self.order > 1 else ()
        if context in self.memo:
            return self.memo[context]
        if context:
            lower = self.distribution(context[1:])
        else:
            lower = np.full(self.vocab, 1.0 / self.vocab)
        seen = self.counts.get(context)
        if seen:
            counts = np.zeros(self.vocab)
            counts[list(seen)] = list(seen.values())
            p = (counts + len(seen) * lower) / (counts.sum() + len(seen))
        else:
            p = lower
        self.memo[context] = p
        return p

    def nll(self, piece: list[int], given: int = 0) -> float:
        """Summed NLL (nats) of the tokens after BOS (and after the first `given` of them)."""
        return -sum(
            math.log(self.distribution(tuple(piece[max(0, t - self.order + 1) : t]))[piece[t]])
            for t in range(1 + given, len(piece))
        )

    def sample(self, opening: list[int], length: int, end: int, rng: np.random.Generator):
        piece = list(opening)
        while len(piece) < length and piece[-1] != end:
            weights = self.distribution(tuple(piece[len(piece) - self.order + 1 :])).copy()
            weights[:2] = 0  # never PAD or BOS
            piece.append(int(rng.choice(self.vocab, p=weights / weights.sum())))
        return piece


def real_ids(ids: np.ndarray, pad: int) -> list[list[int]]:
    """Each row's ids from BOS through EOS."""
    return [[int(i) for i in row if i != pad] for row in ids]


# ------------------------------------------------------------------- polymodal
def model_config(args: argparse.Namespace) -> Config:
    options = {"max_bars": args.bars, "layers": args.layers, "heads": 4}
    return Config.model_validate(
        {
            "targets": [{"column": "tune", "task": "music", "options": options}],
            "inputs": ["key", "mode", "metre", "collection"],
            "model": {"dim": args.dim, "dropout": 0.1},
            "train": {"max_epochs": args.epochs, "patience": 8, "seed": args.seed,
                      "max_time": str(args.minutes), "batch_size": args.batch_size},
        }
    )  # fmt: skip


def heldout_nll(model: Model, table_path: Path, rows: pd.Series, given: int) -> tuple[float, int]:
    """(summed NLL, events) of the table's `rows` under the model, teacher-forced."""
    table = read_table(table_path)
    task = model.task("tune")
    features = model.encode(table)
    targets = encode_targets(model.schema_.targets, table)
    tensors = {k: (torch.as_tensor(v), torch.as_tensor(kn)) for k, (v, kn) in targets.items()}
    picked = np.flatnonzero(rows.to_numpy())
    nats, events = 0.0, 0
    model.net_.eval()
    with torch.inference_mode():
        for batch in TensorBatches(features, tensors, picked, 64):
            outputs = model.net_.head_outputs(model.net_.encode(batch["inputs"]), batch["targets"])
            ids = batch["targets"]["tune"][0].numpy()
            n, e = task.nll(outputs["tune"].float().numpy(), ids, given)
            nats, events = nats + n, events + e
    return nats, events


def figures_row(name: str, made: list[Piece], keys: list, real: list[Piece]) -> dict:
    return {"set": name} | metrics.set_figures(made, keys) | metrics.distances(made, real)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/polymodal-music"))
    parser.add_argument("--per-collection", type=int, default=250)
    parser.add_argument("--bars", type=int, default=8)
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument(
        "--minutes", type=float, default=30, help="training time at most (a plateau stops it first)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: no spinning on a shared CPU)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    print(machine())
    table_path = build_table(args.out, args.per_collection, args.bars, args.seed)
    frame = pd.read_csv(table_path)
    print(f"table: {len(frame)} pieces, {frame.groupby(['collection', 'split']).size().to_dict()}")
    print(f"built in {time.time() - started:.0f} s")

    clock = time.time()
    run = args.out / "run"
    model = Model(config=model_config(args)).fit(str(table_path), out=str(run), overwrite=True)
    print(f"polymodal trained in {time.time() - clock:.0f} s")
    task = model.task("tune")
    pad, end = task.text.pad_id, task.text.eos_id
    ids, _ = task.encode(frame["tune"].map(lambda p: str(args.out / p)).tolist())
    split = frame["split"]
    pieces = {name: real_ids(ids[(split == name).to_numpy()], pad) for name in split.unique()}
    events = {name: int(np.isin(ids[(split == name).to_numpy()], task.event_ids()).sum())
              for name in split.unique()}  # fmt: skip

    print("\nheld-out NLL per note (nats per note or rest)")
    vocab = task.outputs
    chosen = min(
        range(1, 9),
        key=lambda n: sum(NGram(n, vocab).fit(pieces["train"]).nll(p) for p in pieces["valid"]),
    )
    ngram = NGram(chosen, vocab).fit(pieces["train"])
    for given, what in ((0, "every token"), (HEADER, "melody (key, metre given)")):
        nats, counted = heldout_nll(model, table_path, split == "test", given)
        gram = sum(ngram.nll(p, given) for p in pieces["test"]) / events["test"]
        print(f"  {what:28s} polymodal {nats / counted:.3f}   {chosen}-gram {gram:.3f}")

    real = [parse_tokens(task.tokenizer.decode(p)) for p in pieces["test"]]
    keys = [(piece.tonic, piece.mode) for piece in real]
    train = [parse_tokens(task.tokenizer.decode(p)) for p in pieces["train"]]

    clock = time.time()
    test = frame[split == "test"].reset_index(drop=True)
    model.set_decoding(music_dir=str(args.out / "generated"), seed=args.seed)
    test_table = args.out / "test.csv"
    test.to_csv(test_table, index=False)
    decoded = model.decode(model.forward(model.encode(str(test_table))))["tune"]
    made = [parse_tokens(str(text)) for text in decoded["text"]]
    print(f"\n{len(made)} pieces generated in {time.time() - clock:.1f} s")
    rng = np.random.default_rng(args.seed)
    sampled = [
        ngram.sample(p[: 1 + HEADER], task.text.max_length + 2, end, rng) for p in pieces["test"]
    ]
    gram_made = [parse_tokens(task.tokenizer.decode(p)) for p in sampled]
    table = pd.DataFrame(
        [
            figures_row("held-out corpus", real, keys, real),
            figures_row("training corpus", train, None, real),
            figures_row("polymodal, generated", made, keys, real),
            figures_row(f"{chosen}-gram, generated", gram_made, keys, real),
        ]
    )
    with pd.option_context("display.width", 200, "display.precision", 3):
        print(table.to_string(index=False))

    clock = time.time()
    ten = {k: v[:10] for k, v in decoded.items()}
    task.number_rows(0)
    written = task.columns(ten)
    print(f"\nten pieces written and rendered in {time.time() - clock:.1f} s:")
    for index in range(10):
        row, piece = test.iloc[index], made[index]
        print(
            f"  {written['tune_wav'][index]}  {piece.bars} bars, {piece.tonic} {piece.mode}, "
            f"{piece.metre[0]}/{piece.metre[1]} (asked: {row['key']} {row['mode']}, "
            f"{row['metre']}, {row['collection']})"
        )
    print(f"\ntotal {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
