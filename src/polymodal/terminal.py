"""What the user's terminal shows: polymodal's own tables and lines, one line per warning.

Its own module so that the command line and the demo both print through it without importing
each other, and so that no library prints banners, tips or multi-line warnings in between.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table as RichTable

console = Console(stderr=True)  # progress, problems, warnings
out = Console()  # results

# Loggers that print Lightning's banners ("GPU available", "TPU available", "LOCAL_RANK"), its
# logging-service tip and "`Trainer.fit` stopped". Lightning sets its package loggers to INFO
# when it is imported, so these are set again after that import (see `quiet_lightning`).
LIGHTNING_LOGGERS = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
)


def quiet_lightning() -> None:
    """Lightning's info lines are about the trainer polymodal configured, not the user's data."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def quiet_libraries() -> None:
    """Warnings print as one `warning:` line; library deprecations and Lightning's advice on
    trainer settings (which polymodal chooses, not the user) are left out."""
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning")
    warnings.showwarning = show_warning
    warnings.filterwarnings("ignore", module=r"(lightning|pytorch_lightning|lightning_fabric)\b")
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(?!polymodal\b)")
    quiet_lightning()


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """`warnings.showwarning` that writes `warning: <message>` on one line, without the source
    line Python adds by default."""
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=file or sys.stderr)


def print_metrics(metrics: dict) -> None:
    for split in ("valid", "test"):
        if split in metrics:
            print_target_metrics(split, metrics[split])
    seconds = metrics.get("train_seconds", 0)
    epochs, best = len(metrics.get("history", [])), metrics.get("best_epoch")
    out.print(f"trained {epochs} epochs in {seconds:.0f} s; best epoch {best}")
    if still_improving(metrics):
        limit = "epoch cap" if metrics.get("stop_reason") == "epochs" else "time limit"
        out.print(
            f"note: the {limit} ended training while validation was still improving; "
            "more epochs (--epochs) or time (--max-time) may give a better model"
        )


def still_improving(metrics: dict) -> bool:
    """Whether the epoch cap or time limit, rather than a plateau of the validation score,
    started the final cool-down (training/budget.py)."""
    return len(metrics.get("history", [])) > 1 and metrics.get("stop_reason") in ("epochs", "time")


def print_target_metrics(title: str, report: dict) -> None:
    view = RichTable(title=title)
    view.add_column("target")
    view.add_column("metric")
    view.add_column("value", justify="right")
    for target, values in report.items():
        for name, value in values.items():
            if isinstance(value, float):
                view.add_row(target, name, f"{value:.4f}")
            elif name == "rows":
                view.add_row(target, name, str(value))
    out.print(view)
    for target, values in report.items():
        if "confusion_matrix" in values and len(values["classes"]) <= 12:
            print_confusion(target, values["classes"], values["confusion_matrix"])
        if values.get("examples"):
            print_examples(target, values["examples"])


def print_examples(target: str, examples: list[dict]) -> None:
    """A few generated texts beside their references."""
    view = RichTable(title=f"{target}: examples")
    view.add_column("reference")
    view.add_column("predicted")
    for example in examples:
        view.add_row(example["reference"], example["predicted"])
    out.print(view)


def print_confusion(target: str, classes: list[str], matrix: list[list[int]]) -> None:
    view = RichTable(title=f"{target}: confusion matrix (rows true, columns predicted)")
    view.add_column("")
    for name in classes:
        view.add_column(name[:10], justify="right")
    for name, row in zip(classes, matrix, strict=True):
        view.add_row(name[:10], *map(str, row))
    out.print(view)


def print_problems(problems: list[dict], limit: int = 20) -> None:
    if not problems:
        return
    view = RichTable(title=f"{len(problems)} input problems (rows kept, the input masked)")
    for header in ("table", "row", "column", "file", "reason"):
        view.add_column(header)
    for problem in problems[:limit]:
        view.add_row(
            Path(problem.get("table") or "").name, str(problem["row"]), problem["column"],
            problem.get("path") or "", problem["reason"],
        )  # fmt: skip
    console.print(view)
    if len(problems) > limit:
        console.print(f"... and {len(problems) - limit} more (see metrics.json)")


def print_comparison(result: dict) -> None:
    view = RichTable(title=f"{result['target']}: test {result['metric']} over seeds")
    for header in ("configuration", "metric", "train s", "parameters"):
        view.add_column(header, justify="left" if header == "configuration" else "right")
    for row in result["configurations"]:
        view.add_row(
            row["name"], f"{row['mean']:.4f} ± {row['std']:.4f}", f"{row['seconds']:.0f}",
            f"{row['parameters']:,}",
        )  # fmt: skip
    out.print(view)
    gain = result.get("modality_gain")
    if gain:
        ratio = f", error ratio {gain['error_ratio']:.2f}" if gain.get("error_ratio") else ""
        out.print(
            f"modality gain: {gain['best_multimodal']} vs {gain['best_unimodal']}: "
            f"{gain['gain']:+.4f} ± {gain['standard_error']:.4f}{ratio}"
        )
