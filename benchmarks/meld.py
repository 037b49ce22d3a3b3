"""MELD: text + speaker → emotion, trained on train, validated on dev, scored on test.

    .venv/bin/python benchmarks/meld.py [--fusions concat,late,attention]

Prints test weighted-F1 per configuration (text only, speaker only, each fusion).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from common import DATASETS, ROOT, machine, require

sys.path.insert(0, str(ROOT / "src"))

from polymodal import Model  # noqa: E402
from polymodal.config import Config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fusions", default="concat,late,attention")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    os.environ.setdefault("POLYMODAL_PROGRESS", "0")
    folder = require(DATASETS / "raw" / "meld")
    train, dev, test = (folder / f"{s}_sent_emo.csv" for s in ("train", "dev", "test"))
    # One input alone: the default fusion, as `polymodal compare` trains its unimodal models.
    runs = [("text only", ["Utterance"], None), ("speaker only", ["Speaker"], None)]
    runs += [(f"fusion: {f}", ["Utterance", "Speaker"], f) for f in args.fusions.split(",")]
    print(machine())
    for name, inputs, fusion in runs:
        config = Config(inputs=inputs)
        if args.epochs:
            config.train.max_epochs = args.epochs
        started = time.perf_counter()
        model = Model(target="Emotion", fusion=fusion, config=config).fit(train, valid=dev)
        report = model.evaluate(test)["Emotion"]
        seconds = time.perf_counter() - started
        print(
            f"  {name:<18} test weighted-F1 {report['weighted_f1']:.4f}  "
            f"accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}  ({seconds:.0f} s)"
        )


if __name__ == "__main__":
    main()
