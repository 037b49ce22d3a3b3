"""Match targets: several columns trained into one embedding space (contrastive retrieval).

The task (:mod:`.task`, registered as `match`), its contrastive losses (:mod:`.loss`) and its
retrieval metrics (:mod:`.metrics`).
"""

from polymodal.tasks.match.loss import (
    LearnedTemperature,
    column_pairs,
    gathered_info_nce,
    info_nce,
    pair_losses,
)
from polymodal.tasks.match.metrics import both_directions, retrieval_metrics
from polymodal.tasks.match.task import MatchTask, match_target

__all__ = [
    "LearnedTemperature",
    "MatchTask",
    "both_directions",
    "column_pairs",
    "gathered_info_nce",
    "info_nce",
    "match_target",
    "pair_losses",
    "retrieval_metrics",
]
