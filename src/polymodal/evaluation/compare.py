"""Multimodal versus unimodal, side by side, on one split and one training budget.

For each seed: one model per input modality (number and category columns together count as
"tabular"), one model per fusion strategy over every input, and an ensemble that averages
the unimodal models' outputs. A target that needs all its inputs (a match of several
columns) is compared over the fusions only. The modality gain is the best multimodal mean minus the best
unimodal mean, with the standard error of that difference over seeds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from polymodal.config import Config, TargetConfig
from polymodal.data.schema import file_columns, resolve_inputs
from polymodal.data.table import Table, read_table, split_rows
from polymodal.fusion import FUSIONS
from polymodal.modalities import modality
from polymodal.model import Model
from polymodal.tasks import Task, encode_targets
from polymodal.tasks.targets import task_class


@dataclass
class RunResult:
    seed: int
    score: float
    seconds: float
    parameters: int
    history: list[dict] = field(default_factory=list)


@dataclass
class Configuration:
    name: str
    family: str  # "unimodal", "fusion" or "ensemble"
    inputs: list[str]
    fusion: str | None = None
    runs: list[RunResult] = field(default_factory=list)

    @property
    def scores(self) -> np.ndarray:
        return np.array([run.score for run in self.runs])

    def summary(self) -> dict:
        scores = self.scores
        return {
            "mean": float(scores.mean()),
            "std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
            "seconds": float(np.mean([run.seconds for run in self.runs])),
            "parameters": int(np.mean([run.parameters for run in self.runs])),
        }


def modality_groups(kinds: dict[str, str]) -> dict[str, list[str]]:
    """Input columns per modality; numbers and categories form one 'tabular' group."""
    groups: dict[str, list[str]] = {}
    for column, kind in kinds.items():
        groups.setdefault("tabular" if modality(kind).tabular else kind, []).append(column)
    return groups


def plan_configurations(
    kinds: dict[str, str], fusions: list[str] | None = None, unimodal: bool = True
) -> list[Configuration]:
    """Each modality alone (unless the target needs every input, as a match does), each
    fusion over every input, and an ensemble of the unimodal models when there are several."""
    groups = modality_groups(kinds).items() if unimodal else []
    configurations = [
        Configuration(f"{group} only", "unimodal", columns) for group, columns in groups
    ]
    everything = list(kinds)
    for fusion in fusions or FUSIONS.names():
        configurations.append(Configuration(f"fusion: {fusion}", "fusion", everything, fusion))
    if sum(c.family == "unimodal" for c in configurations) > 1:
        configurations.append(Configuration("ensemble of unimodal", "ensemble", everything))
    return configurations


def metric_name(model: Model) -> tuple[str, bool]:
    """The compared metric (the task's score metric) and whether higher is better."""
    task = model.task()
    return task.score_metric, task.metrics[task.score_metric]


def compare(
    data: str | Path | Table,
    target: str,
    config: Config,
    seeds: int = 3,
    fusions: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train every configuration for every seed and score it on the test split (else valid)."""
    table = read_table(data)
    base = config.model_copy(deep=True)
    kinds = resolve_inputs(table, base, [target])
    together = file_columns(kinds, base)
    splits = split_rows(table, base.train.valid_fraction, base.train.seed, together)
    scored = table.subset(splits["test"] if len(splits["test"]) else splits["valid"])
    named = {t.column: t for t in base.targets}.get(target) or TargetConfig(column=target)
    unimodal = not task_class(named).fuses_apart  # a match needs every column it matches
    configurations = plan_configurations(kinds, fusions, unimodal)
    metric, higher = "accuracy", True
    for seed in range(seeds):
        unimodal_outputs, unimodal_tasks = [], []
        for configuration in configurations:
            if configuration.family == "ensemble":
                score = ensemble_score(unimodal_tasks[0], unimodal_outputs, scored, metric)
                configuration.runs.append(RunResult(seed, score, 0.0, 0))
                log(f"seed {seed} {configuration.name}: {metric} {score:.4f}")
                continue
            run_config = base.model_copy(deep=True)
            run_config.inputs = configuration.inputs
            run_config.train.seed = base.train.seed + seed
            if configuration.fusion:
                run_config.model.fusion = configuration.fusion
            started = time.perf_counter()
            model = Model(target=target, config=run_config).fit(table)
            seconds = time.perf_counter() - started
            metric, higher = metric_name(model)
            score = model.evaluate(scored)[target][metric]
            configuration.runs.append(
                RunResult(
                    seed, score, seconds, model.metrics_["parameters"], model.metrics_["history"]
                )
            )
            if configuration.family == "unimodal":
                unimodal_outputs.append(model_outputs(model, scored))
                unimodal_tasks.append(model.task())
            log(f"seed {seed} {configuration.name}: {metric} {score:.4f} ({seconds:.0f} s)")
    return summarise(configurations, metric, higher, target, len(scored))


def model_outputs(model: Model, table: Table) -> dict[str, np.ndarray]:
    """What the ensemble combines: the first target's decoded outputs on `table`."""
    task = model.task()
    return task.decode(model.raw_outputs(table)[task.state.column])


def ensemble_score(task: Task, outputs: list[dict], table: Table, metric: str) -> float:
    """The metric of the unimodal models' combined outputs (the task says how to combine)."""
    truth = encode_targets([task.state], table)[task.state.column]
    return float(task.evaluate(*truth, task.combine(outputs))[metric])


def summarise(
    configurations: list[Configuration], metric: str, higher: bool, target: str, rows: int
) -> dict:
    rows_out = []
    for configuration in configurations:
        rows_out.append(
            {
                "name": configuration.name,
                "family": configuration.family,
                "inputs": configuration.inputs,
                "fusion": configuration.fusion,
                **configuration.summary(),
                "runs": [asdict(run) for run in configuration.runs],
            }
        )
    return {
        "target": target,
        "metric": metric,
        "higher_is_better": higher,
        "scored_rows": rows,
        "configurations": rows_out,
        "modality_gain": modality_gain(configurations, higher),
    }


def modality_gain(configurations: list[Configuration], higher: bool) -> dict:
    """Best multimodal minus best unimodal (sign flipped for lower-is-better metrics)."""
    pick = max if higher else min
    unimodal = [c for c in configurations if c.family == "unimodal"]
    multimodal = [c for c in configurations if c.family != "unimodal"]
    if not unimodal or not multimodal:
        return {}
    best_uni = pick(unimodal, key=lambda c: c.scores.mean())
    best_multi = pick(multimodal, key=lambda c: c.scores.mean())
    sign = 1.0 if higher else -1.0
    gain = sign * (best_multi.scores.mean() - best_uni.scores.mean())
    n = len(best_uni.scores)
    spread = (
        np.sqrt(best_uni.scores.var(ddof=1) / n + best_multi.scores.var(ddof=1) / n)
        if n > 1
        else 0.0
    )
    result = {
        "best_unimodal": best_uni.name,
        "best_multimodal": best_multi.name,
        "gain": float(gain),
        "standard_error": float(spread),
    }
    if higher:  # error-rate ratio, the number peers quote
        error_uni = 1 - best_uni.scores.mean()
        result["error_ratio"] = (
            float((1 - best_multi.scores.mean()) / error_uni) if error_uni else None
        )
    return result


def write_comparison(result: dict, folder: Path) -> tuple[Path, Path]:
    from polymodal.evaluation.compare_report import comparison_html

    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "comparison.json"
    json_path.write_text(json.dumps(result, indent=1))
    html_path = folder / "comparison.html"
    html_path.write_text(comparison_html(result))
    return json_path, html_path
