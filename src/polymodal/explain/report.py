"""`polymodal report`: everything known about one model in one self-contained HTML file.

Without data: the model, training curves, validation/test metrics and the `compare` results
when they sit nearby. With data: also the metrics on it, modality contributions, example
attributions, robustness curves and per-group metrics. Every picture is inline base64 and
there are no scripts, fonts or links to fetch, so the file opens offline and can be mailed.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polymodal.data.table import Table, read_table, split_rows
from polymodal.explain import findings, sections
from polymodal.explain.explanation import explain
from polymodal.explain.figures import training_curves
from polymodal.explain.groups import group_metrics
from polymodal.explain.pages import STYLE, row_html, row_pictures
from polymodal.explain.robustness import ATTACK_ROWS, robustness
from polymodal.modalities import modality
from polymodal.model import DataLike, Model

EXAMPLE_ROWS = 3
MAX_ROWS = 500
TRAIN_REPORT_ROWS = 200


@dataclass
class ReportOptions:
    rows: list[int] | None = None  # rows whose attributions are shown; None: the first few
    group_by: list[str] = field(default_factory=list)  # empty: the category inputs, if any
    robustness: bool = True
    adversarial: bool = True
    attack_rows: int = ATTACK_ROWS  # attacks take ten gradient steps per ε: fewer rows
    max_rows: int = MAX_ROWS  # a seeded sample of larger tables keeps the report quick
    seed: int = 0
    data_name: str = "this table"


def describe(model: Model, table: Table, features: dict) -> list[dict]:
    return [
        {
            "column": state.column,
            "kind": state.kind,
            "present": int(features[state.column]["present"].sum()),
            "missing": int((~features[state.column]["present"]).sum()),
        }
        for state in model.schema_.inputs
    ]


def sample(table: Table, limit: int, seed: int) -> Table:
    if len(table) <= limit:
        return table
    rows = np.sort(np.random.default_rng(seed).choice(len(table), limit, replace=False))
    return table.subset(rows)


def default_groups(model: Model, table: Table) -> list[str]:
    """Up to two columns whose values name groups of rows (categories), for the slices."""
    grouping = [s.source for s in model.schema_.inputs if modality(s.kind).groups_rows]
    return [source for source in grouping if source in table.frame][:2]


def data_sections(model: Model, data: DataLike, options: ReportOptions) -> list[tuple[str, str]]:
    """The sections that need a labelled table."""
    table = sample(read_table(data), options.max_rows, options.seed)
    features = model.encode(table)
    found = [
        (
            f"Data: {options.data_name}",
            sections.data_summary(model, describe(model, table, features)),
        )
    ]
    outputs = model.forward(features)
    name = options.data_name
    found.append((f"Metrics on {name}", sections.metric_tables(model.evaluate(table), name)))
    rows = options.rows if options.rows is not None else list(range(min(EXAMPLE_ROWS, len(table))))
    explanation = explain(model, table, rows, seed=options.seed)
    found.append(
        (
            "Modality contributions",
            findings.contributions_section(explanation.contributions.to_json()),
        )
    )
    examples = [row_html(model, row, row_pictures(model, row)) for row in explanation.rows]
    found.append(("Example attributions", "\n".join(examples)))
    if options.robustness:
        result = robustness(
            model, table, adversarial=options.adversarial, attack_rows=options.attack_rows,
            seed=options.seed,
        )  # fmt: skip
        body = "\n".join(findings.robustness_section(t, r) for t, r in result["targets"].items())
        found.append(("Robustness", body or "<p>No known target in this table.</p>"))
    for column in options.group_by or default_groups(model, table):
        report = group_metrics(model, table, column, outputs)
        found.append((f"Metrics by {column}", findings.groups_section(report)))
    return found


def build_report(
    model: Model, folder: Path, data: DataLike | None = None, options: ReportOptions | None = None
) -> str:
    options = options or ReportOptions()
    found = [("Model", sections.model_summary(model, folder))]
    if data is None:
        found.append(("Data", sections.data_summary(model, None)))
    curves = training_curves(model.metrics_.get("history", []))
    found.append(("Training", curves or "<p>No training history in metrics.json.</p>"))
    for split in ("valid", "test"):
        if split in model.metrics_:
            found.append(
                (f"Metrics: {split}", sections.metric_tables(model.metrics_[split], split))
            )
    comparison = sections.comparison_section(folder)
    if comparison:
        found.append(("Comparison with unimodal models", comparison))
    if data is not None:
        found += data_sections(model, data, options)
    title = ", ".join(t.column for t in model.schema_.targets)
    body = "\n".join(
        f"<section><h2>{html.escape(name)}</h2>\n{content}</section>" for name, content in found
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>polymodal report: {html.escape(title)}</title>{STYLE}</head><body>"
        f"<h1>polymodal report: {html.escape(title)}</h1>\n{body}\n</body></html>"
    )


def write_report(
    model: Model,
    folder: Path,
    out: Path,
    data: DataLike | None = None,
    options: ReportOptions | None = None,
) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(model, folder, data, options))
    return out


def training_report(
    model: Model, folder: Path, data: DataLike, valid: DataLike | None = None
) -> Path:
    """`polymodal train`'s report.html: everything but the robustness sweeps, on the held-out
    rows (the test split if there is one, else the validation rows or table)."""
    if valid is not None:
        table, name = read_table(valid), "the validation table"
    else:
        table = read_table(data)
        together = [s.source for s in model.schema_.inputs if modality(s.kind).files]
        train = model.config.train
        splits = split_rows(table, train.valid_fraction, train.seed, together)
        held = "test" if len(splits["test"]) else "valid"
        table, name = table.subset(splits[held]), f"the {held} rows"
    options = ReportOptions(robustness=False, max_rows=TRAIN_REPORT_ROWS, data_name=name)
    return write_report(model, folder, folder / "report.html", table, options)
