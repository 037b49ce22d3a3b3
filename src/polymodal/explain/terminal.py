"""Terminal tables for `polymodal evaluate --robustness / --group-by`."""

from __future__ import annotations

from rich.table import Table as RichTable


def robustness_tables(target: str, result: dict) -> list[RichTable]:
    """Removal, then each curve as one line: the score at each level, mild to strong."""
    metric = result["metric"]
    removed = RichTable(
        title=f"{target}: {metric} with one input removed (clean {result['clean']:.4f})"
    )
    removed.add_column("input removed")
    removed.add_column(metric, justify="right")
    removed.add_column("change", justify="right")
    for name, value in result["removed"].items():
        removed.add_row(name, f"{value:.4f}", f"{value - result['clean']:+.4f}")
    curves = RichTable(title=f"{target}: {metric} under noise and attacks (mild → strong)")
    for header in ("input", "perturbation", "levels", "scores"):
        curves.add_column(header)
    for line in result["curves"]:
        curves.add_row(
            line["input"], line["perturbation"],
            f"{line['unit']}: " + ", ".join(f"{level:.3g}" for level in line["levels"]),
            ", ".join(f"{score:.3f}" for score in line["scores"]),
        )  # fmt: skip
    return [removed, curves]


def groups_table(target: str, found: dict) -> RichTable:
    gap = found["gap"]
    caption = (
        f"largest gap {gap['value']:.4f}: {gap['best']} vs {gap['worst']}"
        if gap
        else "fewer than two groups with a known target"
    )
    view = RichTable(title=f"{target}: {found['metric']} by {found['column']}", caption=caption)
    view.add_column("group")
    view.add_column("rows", justify="right")
    view.add_column(found["metric"], justify="right")
    for group in found["groups"]:
        value = "n/a" if group["score"] is None else f"{group['score']:.4f}"
        view.add_row(str(group["group"]), str(group["rows"]), value)
    return view
