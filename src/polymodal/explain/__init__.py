"""Explain and stress-test a fitted model.

- `explain`: Shapley contributions of each input (to the metric and to each prediction) and
  Captum attributions inside each input; `write_explanations` saves PNGs, JSON and HTML.
- `robustness`: the metric with inputs removed, under noise sweeps and adversarial attacks.
- `group_metrics`: the metric per group of a column, and the largest gap between groups.
- `write_report`: all of it, with training curves and metrics, in one self-contained HTML.
"""

from polymodal.explain.explanation import Explanation, RowExplanation, explain
from polymodal.explain.groups import group_metrics
from polymodal.explain.pages import write_explanations
from polymodal.explain.report import ReportOptions, build_report, write_report
from polymodal.explain.robustness import robustness
from polymodal.explain.shapley import ModalityContributions, modality_contributions, shapley_values

__all__ = [
    "Explanation",
    "ModalityContributions",
    "ReportOptions",
    "RowExplanation",
    "build_report",
    "explain",
    "group_metrics",
    "modality_contributions",
    "robustness",
    "shapley_values",
    "write_explanations",
    "write_report",
]
