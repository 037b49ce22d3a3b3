"""AV-MNIST with an input missing: modality dropout P against none, and exact contributions.

    .venv/bin/python benchmarks/missing_inputs.py [--dropouts 0.3,0] [--out runs/bench-missing]

Trains one default model per P (`polymodal train --modality-dropout P`), then scores the
test rows with every input, with the audio cells emptied and with the image cells emptied
(an empty cell is masked, as a missing file is). Last, the exact Shapley contribution of each
input to test accuracy for the first model, and the check that they add up.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import DATASETS, ROOT, machine, require

sys.path.insert(0, str(ROOT / "src"))

from polymodal.data.table import Table, read_table  # noqa: E402
from polymodal.explain import explain
from polymodal.model import Model  # noqa: E402

POLYMODAL = Path(sys.executable).parent / "polymodal"


def without(table: Table, column: str) -> Table:
    emptied = table.subset(np.arange(len(table)))
    emptied.frame[column] = None
    return emptied


def train(data: Path, dropout: str, out: Path) -> float:
    command = [str(POLYMODAL), "train", str(data), "--target", "label"]
    command += ["--modality-dropout", dropout, "--out", str(out), "--overwrite", "--no-report"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dropouts", default="0.3,0")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-missing")
    args = parser.parse_args()
    os.environ.setdefault("POLYMODAL_PROGRESS", "0")
    data = require(DATASETS / "avmnist" / "avmnist.csv")
    table = read_table(data)
    test = table.subset(np.flatnonzero(table.frame["split"] == "test"))
    print(machine())
    print(f"{'P':>5} {'both':>7} {'no audio':>9} {'no image':>9} {'train s':>8}")
    folders = []
    for dropout in args.dropouts.split(","):
        folder = args.out / f"dropout-{dropout}"
        seconds = train(data, dropout, folder)
        model = Model.load(folder)
        scores = [
            model.evaluate(part)["label"]["accuracy"]
            for part in (test, without(test, "audio"), without(test, "image"))
        ]
        print(f"{dropout:>5} {scores[0]:>7.3f} {scores[1]:>9.3f} {scores[2]:>9.3f} {seconds:>8.0f}")
        folders.append(folder)

    found = explain(Model.load(folders[0]), test, rows=[0]).contributions
    total = sum(found.metric_contributions.values())
    shares = ", ".join(f"{name} {value:+.4f}" for name, value in found.metric_contributions.items())
    print(f"contributions to test accuracy ({folders[0].name}): {shares}")
    print(
        f"sum {total:.6f}; all {found.metric_all:.4f} - none {found.metric_none:.4f} = "
        f"{found.metric_all - found.metric_none:.6f}; "
        f"difference {abs(total - (found.metric_all - found.metric_none)):.1e}"
    )


if __name__ == "__main__":
    main()
