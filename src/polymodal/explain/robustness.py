"""`polymodal evaluate --robustness`: the metric with each input removed, under noise sweeps
and under adversarial attacks, per target, as plain JSON-able numbers (the curves' data)."""

from __future__ import annotations

import numpy as np

from polymodal.data.table import Table, read_table
from polymodal.explain.adversarial import attack_score, attackable, epsilons_for
from polymodal.explain.noise import sweeps_for
from polymodal.explain.runner import Runner
from polymodal.explain.scoring import Truth, metric_name, score, scores, take_rows, truths
from polymodal.model import DataLike, Model

MAX_ROWS = 1000
ATTACK_ROWS = 128


def curve(name: str, kind: str, perturbation: str, unit: str, levels: list) -> dict:
    return {
        "input": name, "kind": kind, "perturbation": perturbation, "unit": unit,
        "levels": [float(level) for level in levels], "scores": [],
    }  # fmt: skip


def sample(total: int, limit: int | None, seed: int) -> np.ndarray:
    """All rows, or a seeded sorted sample of `limit` of them."""
    if not limit or total <= limit:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, limit, replace=False))


def robustness(
    model: Model,
    data: DataLike,
    *,
    adversarial: bool = True,
    max_rows: int | None = MAX_ROWS,
    attack_rows: int | None = ATTACK_ROWS,
    seed: int = 0,
) -> dict:
    """`{"rows", "targets": {target: {"metric", "clean", "removed", "curves"}}}`.

    Each curve is one input under one perturbation: its levels (mild to strong) and the
    score at each. Scores are higher-is-better (accuracy, micro-F1, −RMSE). At most
    `max_rows` rows (a seeded sample) keep the sweeps quick on large tables; attacks, ten
    gradient steps per ε, run on at most `attack_rows` of them, and their curves carry
    their own row count and clean score.
    """
    table = read_table(data)
    table = table.subset(sample(len(table), max_rows, seed))
    known = truths(model, table)
    if not known:
        return {"rows": len(table), "targets": {}}
    features = model.encode(table)
    runner = Runner(model, features)
    names = list(model.net_.input_names)
    clean = scores(model, runner.outputs(), known)
    removed = {
        name: scores(model, runner.outputs(keep=set(names) - {name}), known) for name in names
    }
    curves = noise_curves(runner, table, known, seed)
    if adversarial:
        for target, truth in known.items():
            rows = np.flatnonzero(truth.known)
            rows = rows[sample(len(rows), attack_rows, seed)]
            attacked = Runner(model, take_rows(features, rows))
            subset = Truth(truth.values[rows], truth.known[rows])
            curves[target] += attack_curves(attacked, target, subset, seed)
    return {
        "rows": len(table),
        "targets": {
            target: {
                "metric": metric_name(model, target),
                "clean": clean[target],
                "removed": {name: removed[name][target] for name in names},
                "curves": curves[target],
            }
            for target in known
        },
    }


def noise_curves(runner: Runner, table: Table, known: dict, seed: int) -> dict[str, list]:
    """Every input's noise sweeps, scored for every target (one pass per level)."""
    model = runner.model
    curves: dict[str, list] = {target: [] for target in known}
    for name in model.net_.input_names:
        kind = model.net_.input_kinds[name]
        for sweep in sweeps_for(model, table, runner.features, name):
            rng = np.random.default_rng(seed)
            found = {
                t: curve(name, kind, sweep.perturbation, sweep.unit, sweep.levels) for t in known
            }
            for level in sweep.levels:
                edited = runner.outputs(replace={name: sweep.apply(level, rng)})
                for target, value in scores(model, edited, known).items():
                    found[target]["scores"].append(value)
            for target in known:
                curves[target].append(found[target])
    return curves


def attack_curves(runner: Runner, target: str, truth: Truth, seed: int) -> list[dict]:
    """FGSM and PGD over an ε sweep for every continuous input."""
    model = runner.model
    clean = score(model, target, runner.outputs()[target], truth)
    found = []
    for name in model.net_.input_names:
        kind = model.net_.input_kinds[name]
        if not attackable(kind):
            continue
        epsilons, unit = epsilons_for(kind)
        for method in ("fgsm", "pgd"):
            line = curve(name, kind, method.upper(), unit, epsilons)
            line["scores"] = [
                attack_score(runner, name, target, truth, eps, method, seed) for eps in epsilons
            ]
            line.update(rows=int(truth.known.sum()), clean=clean)
            found.append(line)
    return found
