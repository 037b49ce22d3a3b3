"""A classical speech recogniser as the peer on AV-Digits: PocketSphinx's WER per noise condition.

.venv/bin/python benchmarks/pocketsphinx_peer.py [--csv benchmarks/data/avdigits/avdigits.csv]
                                                 [--out benchmarks/data/avdigits/pocketsphinx]
                                                 [--isolated] [--limit N] [--workers 2]

PocketSphinx 5 (pip `pocketsphinx`) decodes each test WAV (16 kHz, 16-bit mono) of a CSV built
by build_avdigits.py as one utterance (`full_utt`, so cepstral mean normalisation sees all of it),
in two setups that share its default US-English acoustic model:
- `default`: its default trigram language model and CMU dictionary (a general English recogniser);
- `grammar`: a JSGF grammar that allows only digit words,
  `public <digits> = ( zero | one | ... | nine )+ ;`.
Hypotheses are normalised before scoring: lower case, punctuation dropped, numerals spelled as
words digit by digit ("73" -> "seven three"), and "oh" counted as "zero" (a usual spoken form
of 0 that only the default model can output). Other homophones ("to", "for", "won", "ate") stay
errors. WER is corpus WER (jiwer: edits over reference words) per condition, over the same test
utterances in each condition. It prints a table and writes `hypotheses.csv` (one row per test
row and setup) and `wer.json` to `--out`.

`--isolated` first checks the recogniser on FSDD's 300 isolated test recordings (index 0-4,
clean, resampled 8 -> 16 kHz as the builder does): accuracy is the share whose whole normalised
hypothesis is the spoken digit's word. Besides the two setups it reports `grammar_single` (a
grammar of exactly one digit word, fair only for isolated digits) and `default_homophones` (the
default model with "to/too", "for", "won", "ate" also taken as digits), and writes
`isolated.csv` and `isolated.json`.
`--limit N` takes N evenly spread files or test rows, for a quick check; `--utterances N` the
first N test utterances in all their conditions (`avdigits.py` then scores polymodal on the same
ones beside its full figures). Decoding all 3,300 test
rows takes about an hour on 2 free cores (the default model is slow on noisy audio); results are
appended to `journal.jsonl` in `--out` as they come, and a rerun reuses them (delete the file to
decode afresh).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import time
from pathlib import Path

import jiwer
import numpy as np
import pandas as pd
import soundfile
from common import DATASETS, ROOT, require
from pocketsphinx import Decoder
from scipy.signal import resample_poly

RATE = 16_000
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
GRAMMAR = (
    "#JSGF V1.0;\ngrammar digits;\n"
    "public <digits> = ( zero | one | two | three | four | five | six | seven | eight | nine )+ ;\n"
)
SINGLE = GRAMMAR.replace(")+ ;", ") ;")  # exactly one digit word: only for isolated digits
SETUPS = {"default": None, "grammar": GRAMMAR}
ISOLATED_SETUPS = {**SETUPS, "grammar_single": SINGLE}
HOMOPHONES = {"to": "two", "too": "two", "for": "four", "won": "one", "ate": "eight"}
DECODERS: dict[str, Decoder] = {}  # per worker process, made by start_worker


def make_decoder(grammar: str | None) -> Decoder:
    """A decoder with the default acoustic model and either the default language model (None)
    or a JSGF grammar."""
    decoder = Decoder(loglevel="FATAL")
    if grammar is not None:
        decoder.add_jsgf_string("digits", grammar)
        decoder.activate_search("digits")
    return decoder


def start_worker(setups: dict[str, str | None]) -> None:
    """Pool initialiser: each process loads its own decoders once."""
    DECODERS.update({name: make_decoder(grammar) for name, grammar in setups.items()})


def read_pcm16(path: Path) -> bytes:
    """A WAV file as 16 kHz 16-bit mono PCM bytes (8 kHz files are resampled like the builder)."""
    wave, rate = soundfile.read(path, dtype="float64")
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    if rate != RATE:
        assert RATE % rate == 0, f"{path}: {rate} Hz"
        wave = resample_poly(wave, RATE // rate, 1)
    return (np.clip(wave, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()


def decode(decoder: Decoder, pcm: bytes) -> str:
    """The decoder's best hypothesis for one whole utterance ("" when it finds no words)."""
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return hypothesis.hypstr if hypothesis is not None else ""


def normalise(text: str, homophones: bool = False) -> str:
    """Lower case, no punctuation, numerals as digit words, "oh" as "zero" (see the docstring)."""
    words = []
    for token in re.sub(r"[^a-z0-9' ]", " ", text.lower()).split():
        if token.isdigit():
            words += [WORDS[int(digit)] for digit in token]
        elif token == "oh":
            words.append("zero")
        else:
            words.append(HOMOPHONES.get(token, token) if homophones else token)
    return " ".join(words)


def decode_file(path: str) -> dict[str, str]:
    """Raw hypotheses of every setup for one WAV (runs in a worker)."""
    pcm = read_pcm16(Path(path))
    return {setup: decode(decoder, pcm) for setup, decoder in DECODERS.items()}


def decode_all(
    paths: list[str], setups: dict, workers: int, journal: Path | None = None
) -> list[dict[str, str]]:
    """Decode `paths` with every setup in `workers` processes, in order, printing progress.

    With a `journal` (JSON lines), each result is appended as soon as it is known and results
    already there are reused, so an interrupted run picks up where it stopped."""
    done: dict[str, dict[str, str]] = {}
    if journal is not None and journal.exists():
        for line in journal.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                if set(entry["hypotheses"]) == set(setups):
                    done[entry["path"]] = entry["hypotheses"]
    todo = [path for path in dict.fromkeys(paths) if path not in done]
    if done:
        print(f"  {len(paths) - len(todo)} files already decoded in {journal}", flush=True)
    started, count = time.perf_counter(), 0
    log = journal.open("a") if journal is not None else None
    context = multiprocessing.get_context("fork")
    with context.Pool(workers, initializer=start_worker, initargs=(setups,)) as pool:
        for path, hypotheses in zip(todo, pool.imap(decode_file, todo, chunksize=4), strict=True):
            done[path] = hypotheses
            count += 1
            if log is not None:
                log.write(json.dumps({"path": path, "hypotheses": hypotheses}) + "\n")
                log.flush()
            if count % 250 == 0:
                seconds = time.perf_counter() - started
                print(f"  {count}/{len(todo)} files, {seconds:.0f} s", flush=True)
    if log is not None:
        log.close()
    return [done[path] for path in paths]


def spread(count: int, limit: int | None) -> np.ndarray:
    """`limit` indices spread evenly over range(count) (all of them without a limit)."""
    if limit is None or limit >= count:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(int))


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus word error rate."""
    return float(jiwer.wer(list(references), list(hypotheses)))


def isolated(out: Path, limit: int | None, workers: int) -> dict:
    """Accuracy on FSDD's isolated clean test digits (index 0-4), per setup."""
    folder = require(DATASETS / "raw" / "fsdd" / "recordings")
    files = sorted(p for p in folder.glob("*.wav") if int(p.stem.split("_")[2]) < 5)
    files = [files[i] for i in spread(len(files), limit)]
    started = time.perf_counter()
    decoded = decode_all([str(p) for p in files], ISOLATED_SETUPS, workers)
    rows = []
    for path, hypotheses in zip(files, decoded, strict=True):
        row = {"file": path.name, "reference": WORDS[int(path.stem.split("_")[0])]}
        for setup in ISOLATED_SETUPS:
            row[f"{setup}_raw"] = hypotheses[setup]
            row[setup] = normalise(hypotheses[setup])
        row["default_homophones"] = normalise(hypotheses["default"], homophones=True)
        rows.append(row)
    table = pd.DataFrame(rows)
    result = {"files": len(table), "seconds": round(time.perf_counter() - started, 1)}
    names = (*ISOLATED_SETUPS, "default_homophones")
    for setup in names:
        result[setup] = {
            "accuracy": float((table[setup] == table["reference"]).mean()),
            "wer": wer(table["reference"], table[setup]),
        }
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "isolated.csv", index=False)
    (out / "isolated.json").write_text(json.dumps(result, indent=2))
    print(f"isolated clean FSDD test digits: {len(table)} files, {result['seconds']} s")
    for setup in names:
        figures = result[setup]
        print(f"  {setup:<20} accuracy {figures['accuracy']:.3f}  WER {figures['wer']:.3f}")
    return result


def corpus(
    csv: Path, out: Path, limit: int | None, workers: int, utterances: int | None = None
) -> dict:
    """WER per setup and condition on the CSV's test rows (or the first `utterances` test
    utterances, in every condition); writes hypotheses.csv and wer.json."""
    table = pd.read_csv(require(csv), dtype={"digits": str})
    test = table[table["split"] == "test"].reset_index(drop=True)
    if utterances is not None:
        kept = test["utterance"].drop_duplicates().iloc[:utterances]
        test = test[test["utterance"].isin(kept)].reset_index(drop=True)
    test = test.iloc[spread(len(test), limit)].reset_index(drop=True)
    print(f"{len(test)} test rows, {test['utterance'].nunique()} utterances from {csv}")
    started = time.perf_counter()
    paths = [str(csv.parent / path) for path in test["audio"]]
    out.mkdir(parents=True, exist_ok=True)
    decoded = decode_all(paths, SETUPS, workers, out / "journal.jsonl")
    seconds = time.perf_counter() - started
    rows = []
    for setup in SETUPS:
        for (_, row), hypotheses in zip(test.iterrows(), decoded, strict=True):
            rows.append(
                {
                    "audio": row["audio"],
                    "utterance": row["utterance"],
                    "condition": row["condition"],
                    "noise": row["noise"],
                    "snr_db": row["snr_db"],
                    "setup": setup,
                    "reference": row["text"],
                    "raw": hypotheses[setup],
                    "hypothesis": normalise(hypotheses[setup]),
                }
            )
    hypotheses = pd.DataFrame(rows)
    result = {
        "rows": len(test),
        "utterances": sorted(test["utterance"].unique()),
        "decode_seconds": round(seconds, 1),
        "wer": {},
    }
    for setup, part in hypotheses.groupby("setup", sort=False):
        figures = {"all": wer(part["reference"], part["hypothesis"])}
        for condition, group in part.groupby("condition", sort=False):
            figures[condition] = wer(group["reference"], group["hypothesis"])
        result["wer"][setup] = figures
    out.mkdir(parents=True, exist_ok=True)
    hypotheses.to_csv(out / "hypotheses.csv", index=False)
    (out / "wer.json").write_text(json.dumps(result, indent=2))
    print_table(result["wer"])
    print(f"decoded {len(test)} files x {len(SETUPS)} setups in {seconds:.0f} s; wrote {out}")
    return result


def print_table(figures: dict[str, dict[str, float]]) -> None:
    """WER table: one block per setup, noise kinds as rows, SNRs as columns."""
    snrs = sorted(
        {int(c.split("_")[1].removesuffix("dB")) for f in figures.values() for c in f if "_" in c},
        reverse=True,
    )
    header = f"{'':<10}{'clean':>8}" + "".join(f"{f'{snr} dB':>8}" for snr in snrs)
    for setup, wers in figures.items():
        print(f"PocketSphinx WER, {setup} (all conditions {wers['all']:.3f}):")
        print(header)
        clean = f"{wers['clean']:>8.3f}" if "clean" in wers else f"{'':>8}"
        for kind in ("white", "babble"):
            cells = [wers.get(f"{kind}_{snr}dB") for snr in snrs]
            text = "".join(f"{c:>8.3f}" if c is not None else f"{'':>8}" for c in cells)
            print(f"{kind:<10}{clean}{text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = ROOT / "benchmarks" / "data" / "avdigits"
    parser.add_argument("--csv", type=Path, default=default / "avdigits.csv")
    parser.add_argument("--out", type=Path, default=default / "pocketsphinx")
    parser.add_argument("--isolated", action="store_true", help="only the isolated-digit check")
    parser.add_argument("--limit", type=int, default=None, help="at most N files / test rows")
    parser.add_argument(
        "--utterances", type=int, default=None, help="only the first N test utterances"
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.isolated:
        isolated(args.out, args.limit, args.workers)
    else:
        corpus(args.csv, args.out, args.limit, args.workers, args.utterances)


if __name__ == "__main__":
    main()
