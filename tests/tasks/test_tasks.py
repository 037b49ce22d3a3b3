"""Every built-in task: head shapes, loss over known rows only, decoding, metrics with their
direction, explanation values and serving responses (a contract over the registry)."""

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.config import TargetConfig
from polymodal.fusion import Fused
from polymodal.tasks import TASKS, TargetPrediction, TargetState, fit_target, task_for

BUILT_IN = ["binary", "multiclass", "multilabel", "regression"]  # text: tests/tasks/test_text.py
STATES = {
    "multiclass": TargetState(column="y", task="multiclass", classes=["a", "b", "c"]),
    "binary": TargetState(column="y", task="binary", classes=["no", "yes"]),
    "multilabel": TargetState(column="y", task="multilabel", classes=["p", "q", "r", "s"]),
    "regression": TargetState(column="y", task="regression", mean=3.0, std=2.0),
}
TARGETS = {
    "multiclass": torch.tensor([0, 2, 1, 1]),
    "binary": torch.tensor([0, 1, 1, 0]),
    "multilabel": torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0]]),
    "regression": torch.tensor([0.5, -1.0, 2.0, 0.0]),
}
CELLS = {
    "multiclass": ["a", "c", "b", "b"],
    "binary": ["no", "yes", "yes", "no"],
    "multilabel": ["p|s", "", "p|q|r|s", "q"],
    "regression": [4.0, 1.0, 7.0, 3.0],
}


def fused(branches: int, rows: int = 4) -> Fused:
    weights = torch.softmax(torch.randn(rows, branches), dim=1)
    memory = torch.randn(rows, 2, 8)
    return Fused(torch.randn(rows, branches, 8), weights, memory, torch.ones(rows, 2, dtype=bool))


def test_the_built_in_tasks_are_registered():
    assert set(BUILT_IN) <= set(TASKS.names())


@pytest.mark.parametrize("task_name", BUILT_IN)
@pytest.mark.parametrize("branches", [1, 3])
def test_head_and_loss(task_name, branches):
    task = task_for(STATES[task_name])
    head = task.head(8, branches, 0.0)
    outputs = head(fused(branches))
    assert outputs.shape == (4, task.outputs)
    loss = task.loss(outputs, TARGETS[task_name], torch.tensor([True, True, False, True]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())


@pytest.mark.parametrize("task_name", BUILT_IN)
def test_unknown_rows_add_no_loss(task_name):
    task = task_for(STATES[task_name])
    outputs = task.head(8, 1, 0.0)(fused(1))
    known = torch.tensor([True, False, False, False])
    changed = TARGETS[task_name].clone()
    changed[1:] = changed[1:].flip(0) if task_name != "regression" else changed[1:] + 10
    assert torch.allclose(
        task.loss(outputs, TARGETS[task_name], known), task.loss(outputs, changed, known)
    )


@pytest.mark.parametrize("task_name", BUILT_IN)
def test_encode_decode_evaluate_and_serve(task_name):
    """Outputs that put each row on its true value decode to it, score perfectly on the
    score metric in its direction, and serve as a response the API can send."""
    task = task_for(STATES[task_name])
    values, known = task.encode(CELLS[task_name])
    assert known.all() or task_name == "multilabel"
    if task_name == "regression":
        outputs = values[:, None].astype(np.float32)
    elif task_name == "multilabel":
        outputs = np.where(values > 0, 8.0, -8.0).astype(np.float32)
    elif task_name == "binary":
        outputs = np.where(values > 0, 8.0, -8.0).astype(np.float32)[:, None]
    else:
        outputs = (np.eye(3)[values] * 16 - 8).astype(np.float32)
    decoded = task.decode(outputs)
    if task_name in ("multiclass", "binary"):  # one label per row: a distribution over classes
        assert np.allclose(decoded["probabilities"].sum(axis=1), 1.0)
    if task_name == "regression":
        with pytest.raises(ValueError, match="no classes"):
            task.probabilities(decoded)
    metrics = task.evaluate(values, known, decoded)
    assert metrics["rows"] == int(known.sum())
    assert set(task.metrics) <= set(metrics) and task.score_metric in task.metrics
    best = 1.0 if task.metrics[task.score_metric] else 0.0
    assert metrics[task.score_metric] == pytest.approx(best, abs=1e-4)
    assert task.score(values, known, decoded) == pytest.approx(best, abs=1e-4)
    assert task.score(values, np.zeros_like(known), decoded) != task.score(values, known, decoded)
    columns = task.columns(decoded)
    assert "y_predicted" in columns and all(len(c) == 4 for c in columns.values())
    response = task.prediction(decoded, 0)
    assert isinstance(response, TargetPrediction)
    assert response.model_dump()["predicted"] is not None
    reference, predictions = task.reference(decoded)
    explained = task.explained_value(decoded, reference)
    assert explained.shape == (4,) and len(predictions) == 4
    combined = task.combine([decoded, decoded])
    assert task.evaluate(values, known, combined)[task.score_metric] == pytest.approx(
        metrics[task.score_metric]
    )


@pytest.mark.parametrize("task_name", BUILT_IN)
def test_state_round_trips_through_json(task_name):
    state = STATES[task_name]
    assert TargetState.model_validate_json(state.model_dump_json()) == state


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (["a", "b", "a", "c"], "multiclass"),
        (["yes", "no", "no"], "binary"),
        ([1.5, 2.25, 3.0], "regression"),
        (list(range(30)), "regression"),
        ([1, 2, 3, 1], "multiclass"),
        ([["p", "q"], ["q"]], "multilabel"),
        ([f"row {i} says hello" for i in range(25)], "text"),
        ([f"label {i % 12}" for i in range(48)], "multiclass"),
    ],
)
def test_task_inference(cells, expected):
    import pandas as pd

    state = fit_target(
        pd.DataFrame({"y": pd.Series(cells, dtype=object)}), TargetConfig(column="y"), "t.csv"
    )
    assert state.task == expected


def test_unknown_task_names_the_known_ones():
    import pandas as pd

    with pytest.raises(KeyError, match="multiclass"):
        fit_target(
            pd.DataFrame({"y": pd.Series(["a", "b"])}),
            TargetConfig(column="y", task="ranking"),
            "t.csv",
        )


@pytest.mark.parametrize("task_name", BUILT_IN)
@pytest.mark.parametrize("seed", range(3))
def test_score_is_evaluates_score_metric_signed(task_name, seed):
    """A task may compute its score faster than `evaluate` (it runs after every epoch), but
    never differently: imperfect random outputs, higher is better."""
    task = task_for(STATES[task_name])
    values, known = task.encode(CELLS[task_name])
    outputs = np.random.default_rng(seed).normal(size=(4, task.outputs)).astype(np.float32)
    decoded = task.decode(outputs)
    value = task.evaluate(values, known, decoded)[task.score_metric]
    signed = value if task.metrics[task.score_metric] else -value
    assert task.score(values, known, decoded) == pytest.approx(signed)


def test_every_task_answers_inspects_question_and_an_unmarked_file_is_nobodys(tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("L", (4, 4)).save(plain)
    paths = [str(plain), str(tmp_path / "missing.png"), "a caption, not a path"]
    assert {
        name: TASKS.get(name).count_generated(paths) for name in TASKS.names()
    } == dict.fromkeys(TASKS.names(), 0)
    assert TASKS.get("image").generates == "image/png"
    assert all(TASKS.get(name).generates is None for name in BUILT_IN)
