"""The report's sections on what DATA shows: contributions, robustness, groups."""

from __future__ import annotations

from polymodal.explain import figures
from polymodal.explain.sections import esc, table


def contributions_section(contributions: dict) -> str:
    if contributions.get("metric") is None:
        return "<p>The table has no known target: no contributions to the metric.</p>"
    how = "exact" if contributions["exact"] else "estimated from random permutations"
    text = (
        f"<p>Shapley values ({how}) of each input for {esc(contributions['metric'])}, found by "
        f"removing inputs the way missing files are masked: {contributions['metric_all']:.4f} "
        f"with every input, {contributions['metric_none']:.4f} with none. The bars add up to "
        "the difference.</p>"
    )
    chart = figures.horizontal_bars(
        contributions["metric_contributions"],
        f"contribution to {contributions['metric']}",
        "modality contributions",
    )
    return text + chart


def robustness_section(target: str, result: dict) -> str:
    removed = {
        f"without {name}": value - result["clean"] for name, value in result["removed"].items()
    }
    parts = [
        f"<h3>{esc(target)}</h3><p>Clean {esc(result['metric'])}: {result['clean']:.4f}. "
        "Change when one input is removed (masked as missing):</p>",
        figures.horizontal_bars(
            removed, f"change in {result['metric']}", "metric with each input removed"
        ),
    ]
    curves = figures.robustness_curves(result)
    if curves:
        parts.append(curves)
    return "\n".join(parts)


def groups_section(report: dict) -> str:
    parts = []
    for target, found in report.items():
        gap = found["gap"]
        gap_text = (
            f"largest gap {gap['value']:.4f} ({esc(gap['best'])} vs {esc(gap['worst'])})"
            if gap
            else "fewer than two groups with a known target"
        )
        rows = [
            [g["group"], g["rows"], "n/a" if g["score"] is None else g["score"]]
            for g in found["groups"]
        ]
        parts.append(
            f"<h3>{esc(target)} by {esc(found['column'])}</h3><p>{esc(found['metric'])}: {gap_text}.</p>"
            + table(["group", "rows", found["metric"]], rows)
        )
    return "\n".join(parts)
