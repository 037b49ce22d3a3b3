"""What `polymodal explain` writes: one PNG per picture, explanations.json, explain.html.

The HTML embeds its pictures (base64) so it can be mailed or moved alone; the PNG files are
written as well for use elsewhere.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib.pyplot as plt

from polymodal.explain.explanation import Explanation, RowExplanation
from polymodal.explain.render import (
    figure,
    img_tag,
    is_tabular,
    png_bytes,
    tabular_figure,
    token_html,
)
from polymodal.model import Model

STYLE = (
    "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ddd}"
    "td.n{text-align:right}img{max-width:100%}.tokens{line-height:1.9}</style>"
)


def row_pictures(model: Model, row: RowExplanation) -> dict[str, bytes]:
    """PNG bytes by file stem: one per image, audio or video input, one for tabular columns."""
    pictures = {}
    for item in row.attributions:
        drawn = figure(model, item)
        if drawn is not None:
            pictures[f"row{row.row}_{safe(item.input)}"] = png_bytes(drawn)
    tabular = [item for item in row.attributions if is_tabular(item)]
    if tabular:
        pictures[f"row{row.row}_columns"] = png_bytes(tabular_figure(tabular))
    return pictures


def safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def contributions_table(contributions: dict[str, float]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(name)}</td><td class=n>{value:+.4f}</td></tr>"
        for name, value in sorted(contributions.items(), key=lambda kv: -abs(kv[1]))
    )
    return f"<table><tr><th>input</th><th>contribution</th></tr>{cells}</table>"


def row_html(model: Model, row: RowExplanation, pictures: dict[str, bytes]) -> str:
    """One row: prediction, the inputs' contributions, then each input's attributions."""
    quantity = "predicted value" if isinstance(row.prediction, float) else "probability"
    parts = [
        f"<h3>Row {row.row}: predicted {html.escape(str(row.prediction))} "
        f"({quantity} {row.value:.3f})</h3>",
        contributions_table(row.contributions),
    ]
    for item in row.attributions:
        if "tokens" in item.summary:  # text: highlighted tokens, not a picture
            parts.append(f"<p><b>{html.escape(item.input)}</b></p>" + token_html(item.summary))
    parts += [img_tag(data, f"attributions for {stem}") for stem, data in pictures.items()]
    return "\n".join(parts)


def write_explanations(explanation: Explanation, model: Model, folder: Path) -> list[Path]:
    """Write the PNGs, explanations.json and explain.html into `folder`; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written, sections = [], []
    document = explanation.to_json()
    for row, entry in zip(explanation.rows, document["rows"], strict=True):
        pictures = row_pictures(model, row)
        for stem, data in pictures.items():
            path = folder / f"{stem}.png"
            path.write_bytes(data)
            written.append(path)
        entry["pictures"] = [f"{stem}.png" for stem in pictures]
        sections.append(row_html(model, row, pictures))
    plt.close("all")
    json_path = folder / "explanations.json"
    json_path.write_text(json.dumps(document, indent=1))
    page = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>polymodal explanations: {html.escape(explanation.target)}</title>{STYLE}</head><body>",
        f"<h1>Explanations: {html.escape(explanation.target)}</h1>",
        contributions_summary(explanation),
        *sections,
        "</body></html>",
    ]
    html_path = folder / "explain.html"
    html_path.write_text("\n".join(page))
    return [*written, json_path, html_path]


def contributions_summary(explanation: Explanation) -> str:
    found = explanation.contributions
    if found.metric is None:
        return "<p>No known target in this table: no contribution to the metric.</p>"
    how = "exact" if found.exact else "estimated from random permutations"
    return (
        f"<h2>Modality contributions to {found.metric} (Shapley, {how})</h2>"
        f"<p>{found.metric} with every input {found.metric_all:.4f}, with none "
        f"{found.metric_none:.4f}; the contributions add up to the difference.</p>"
        + contributions_table(found.metric_contributions)
    )
