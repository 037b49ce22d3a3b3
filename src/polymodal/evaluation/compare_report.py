"""The comparison as one self-contained HTML page: a table, a bar chart, learning curves."""

from __future__ import annotations

import html

import matplotlib.pyplot as plt

from polymodal.evaluation.plots import figure_tag

COLOURS = {"unimodal": "#8c9db5", "fusion": "#2f6db5", "ensemble": "#d08c2f"}


def bar_chart(result: dict) -> str:
    rows = result["configurations"]
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(rows) + 1))
    names = [row["name"] for row in rows]
    axis.barh(
        names,
        [row["mean"] for row in rows],
        xerr=[row["std"] for row in rows],
        color=[COLOURS[row["family"]] for row in rows],
    )
    axis.invert_yaxis()
    axis.set_xlabel(f"test {result['metric']} (mean ± std over seeds)")
    return figure_tag(figure, "bar chart of the metric per configuration")


def learning_curves(result: dict) -> str:
    figure, axis = plt.subplots(figsize=(7, 4))
    for row in result["configurations"]:
        history = row["runs"][0]["history"] if row["runs"] else []
        points = [(h["epoch"], h["val_score"]) for h in history if "val_score" in h]
        if points:
            epochs, scores = zip(*points, strict=True)
            style = "--" if row["family"] == "unimodal" else "-"
            axis.plot(epochs, scores, style, label=row["name"])
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation score (first seed)")
    axis.legend(fontsize=8)
    return figure_tag(figure, "validation learning curves")


def comparison_html(result: dict) -> str:
    gain = result.get("modality_gain", {})
    lines = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>polymodal comparison</title>",
        "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ddd}"
        "td.n{text-align:right}</style></head><body>",
        f"<h1>Multimodal vs unimodal: {html.escape(result['target'])}</h1>",
    ]
    if gain:
        lines.append(
            f"<p><b>Modality gain</b>: {html.escape(gain['best_multimodal'])} vs "
            f"{html.escape(gain['best_unimodal'])}: {gain['gain']:+.4f} "
            f"± {gain['standard_error']:.4f} {html.escape(result['metric'])}"
            + (f"; error ratio {gain['error_ratio']:.2f}" if gain.get("error_ratio") else "")
            + "</p>"
        )
    lines.append(
        "<table><tr><th>configuration</th><th>metric</th><th>train s</th><th>parameters</th></tr>"
    )
    for row in result["configurations"]:
        lines.append(
            f"<tr><td>{html.escape(row['name'])}</td>"
            f"<td class=n>{row['mean']:.4f} ± {row['std']:.4f}</td>"
            f"<td class=n>{row['seconds']:.0f}</td><td class=n>{row['parameters']:,}</td></tr>"
        )
    lines += ["</table>", "<h2>Test metric</h2>", bar_chart(result)]
    lines += ["<h2>Learning curves</h2>", learning_curves(result), "</body></html>"]
    return "\n".join(lines)
