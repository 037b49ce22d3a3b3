"""The report's sections, each a piece of HTML built from plain dictionaries."""

from __future__ import annotations

import html
import json
from pathlib import Path

from polymodal.evaluation.compare_report import bar_chart
from polymodal.explain import figures
from polymodal.model import Model

COMPARISON = "comparison.json"


def esc(value: object) -> str:
    return html.escape(str(value))


def table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell_text(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def cell_text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return esc(value)


def model_summary(model: Model, folder: Path) -> str:
    settings = model.config.model
    rows = [[s.column, s.kind] for s in model.schema_.inputs]
    targets = ", ".join(f"{t.column} ({t.task})" for t in model.schema_.targets)
    parameters = model.metrics_.get("parameters")
    return (
        f"<p>Model folder <code>{esc(folder)}</code>; targets: {esc(targets)}; fusion "
        f"<b>{esc(settings.fusion)}</b>, dim {settings.dim}"
        + (f", {parameters:,} parameters" if parameters else "")
        + ".</p>"
        + table(["input", "kind"], rows)
    )


def data_summary(model: Model, described: list[dict] | None) -> str:
    """Rows per split and input problems from training; per input counts for DATA."""
    rows = model.metrics_.get("rows", {})
    problems = model.metrics_.get("problems", [])
    parts = [
        "<p>Training rows: "
        + (", ".join(f"{esc(k)} {v}" for k, v in rows.items()) or "unknown")
        + f"; input problems while training: {len(problems)}.</p>"
    ]
    if described:
        parts.append(
            table(
                ["column", "kind", "present", "missing"],
                [[d["column"], d["kind"], d["present"], d["missing"]] for d in described],
            )
        )
    return "\n".join(parts)


def metric_tables(report: dict, title: str) -> str:
    """One table of metrics per target, and its confusion matrix when there is one."""
    parts = []
    for target, values in report.items():
        scalars = [
            [name, value] for name, value in values.items() if isinstance(value, int | float)
        ]
        parts.append(f"<h3>{esc(title)}: {esc(target)}</h3>" + table(["metric", "value"], scalars))
        if "confusion_matrix" in values and len(values.get("classes", [])) <= 30:
            parts.append(
                figures.confusion_matrix(
                    values["classes"], values["confusion_matrix"], f"{title}: {target}"
                )
            )
    return "\n".join(parts)


def find_comparison(folder: Path) -> Path | None:
    """comparison.json in the model folder, beside it, or in a `comparison/` folder beside it."""
    for candidate in (
        folder / COMPARISON,
        folder.parent / COMPARISON,
        folder.parent / "comparison" / COMPARISON,
    ):
        if candidate.is_file():
            return candidate
    return None


def comparison_section(folder: Path) -> str | None:
    path = find_comparison(folder)
    if path is None:
        return None
    result = json.loads(path.read_text())
    rows = [
        [
            c["name"],
            f"{c['mean']:.4f} ± {c['std']:.4f}",
            f"{c['seconds']:.0f}",
            f"{c['parameters']:,}",
        ]
        for c in result.get("configurations", [])
    ]
    gain = result.get("modality_gain") or {}
    note = (
        f"<p>Modality gain ({esc(gain['best_multimodal'])} vs {esc(gain['best_unimodal'])}): "
        f"{gain['gain']:+.4f} ± {gain['standard_error']:.4f}.</p>"
        if gain
        else ""
    )
    return (
        f"<p>From <code>{esc(path)}</code>: test {esc(result.get('metric', ''))} over seeds.</p>"
        + note
        + table(["configuration", "metric", "train s", "parameters"], rows)
        + bar_chart(result)
    )
