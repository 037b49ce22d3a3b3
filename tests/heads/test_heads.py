"""Every head: output shape, probabilities, loss over known rows only, late-fusion branches."""

import pytest
import torch

from polymodal.data.targets import TargetState
from polymodal.fusion import Fused
from polymodal.heads import HEADS

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


@pytest.mark.parametrize("task", HEADS.names())
@pytest.mark.parametrize("branches", [1, 3])
def test_head_contract(task, branches):
    state = STATES[task]
    head = HEADS.create(task, state, 8, branches, 0.0)
    weights = torch.softmax(torch.randn(4, branches), dim=1)
    outputs = head(Fused(torch.randn(4, branches, 8), weights))
    assert outputs.shape == (4, state.n_outputs)
    known = torch.tensor([True, True, False, True])
    loss = head.loss(outputs, TARGETS[task], known)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    probabilities = head.probabilities(outputs.detach())
    if task in ("multiclass", "binary"):
        assert torch.allclose(probabilities.sum(dim=1), torch.ones(4))
    if task == "regression":
        assert probabilities is None


@pytest.mark.parametrize("task", HEADS.names())
def test_unknown_rows_add_no_loss(task):
    head = HEADS.create(task, STATES[task], 8, 1, 0.0)
    outputs = head(Fused(torch.randn(4, 1, 8), torch.ones(4, 1)))
    known = torch.tensor([True, False, False, False])
    changed = TARGETS[task].clone()
    changed[1:] = changed[1:].flip(0) if task != "regression" else changed[1:] + 10
    assert torch.allclose(
        head.loss(outputs, TARGETS[task], known), head.loss(outputs, changed, known)
    )
