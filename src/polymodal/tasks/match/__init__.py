"""Match targets: several columns trained into one embedding space (contrastive retrieval).

This package holds the match task's parts: the contrastive losses (:mod:`.loss`) and the
retrieval metrics (:mod:`.metrics`). The task itself lands next; nothing here registers one.
"""

from polymodal.tasks.match.loss import (
    LearnedTemperature,
    column_pairs,
    gathered_info_nce,
    info_nce,
    pair_losses,
)
from polymodal.tasks.match.metrics import both_directions, retrieval_metrics

__all__ = [
    "LearnedTemperature",
    "both_directions",
    "column_pairs",
    "gathered_info_nce",
    "info_nce",
    "pair_losses",
    "retrieval_metrics",
]
