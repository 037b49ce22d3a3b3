"""Numbers: standardised values, one token each, Gaussian jitter in standard deviations, and
a number field on the page."""

from __future__ import annotations

from typing import Any

from polymodal.modalities.base import EncodeContext, FitContext, Modality, Sweep, Widget, register
from polymodal.modalities.common import gaussian
from polymodal.modalities.number import encoder  # noqa: F401  (registers the encoder)
from polymodal.modalities.number.preprocess import NumberState, encode_numbers, fit_number


@register
class Number(Modality):
    name = "number"
    state = NumberState
    tabular = continuous = True
    widget = Widget("number")

    def fit(self, cells: list, column: str, source: str, context: FitContext) -> NumberState:
        return fit_number(cells, column, source)

    def encode(self, state: NumberState, cells: list, context: EncodeContext) -> Any:
        return encode_numbers(state, cells, context.log, context.row_ids)

    def sweeps(self, state: NumberState, item: dict, cells: list, base_dir: Any) -> list[Sweep]:
        values = item["values"].float()
        return [
            Sweep(state.column, "gaussian jitter", "σ (standard deviations)",
                  [0.1, 0.25, 0.5, 1.0, 2.0],
                  lambda s, rng: {"values": values + gaussian(values, s, rng)}),
        ]  # fmt: skip
