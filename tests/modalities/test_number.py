"""Numbers: text, NaN and scaling."""

import pytest

from polymodal.data.problems import ProblemLog
from polymodal.modalities.number.preprocess import encode_numbers, fit_number
from tests.modalities.logs import reasons


def test_numbers_text_nan_and_scaling():
    cells = [1.0, 3.0, "oops", None, float("nan"), "5"]
    state = fit_number(cells, "n", "n")
    assert state.mean == pytest.approx(3.0)
    log = ProblemLog()
    column = encode_numbers(state, cells, log)
    assert column.present.tolist() == [True, True, False, False, False, True]
    assert column.values[1, 0] == pytest.approx(0.0) and column.values[5, 0] > 0
    assert list(reasons(log)) == [2]
