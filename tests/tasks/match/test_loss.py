"""Tests for polymodal.tasks.match.loss against brute-force references written with loops."""

from __future__ import annotations

import math

import pytest
import torch

from polymodal.tasks.match import (
    LearnedTemperature,
    column_pairs,
    gathered_info_nce,
    info_nce,
    pair_losses,
)


def batch(n: int = 6, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=generator, dtype=torch.float64)
    b = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return a, b


def reference(a, b, scale, positives=None) -> float:
    """InfoNCE by hand: explicit loops, log-softmax written out, both directions averaged."""
    n = len(a)
    unit_a = [[x / math.sqrt(sum(v * v for v in row)) for x in row] for row in a.tolist()]
    unit_b = [[x / math.sqrt(sum(v * v for v in row)) for x in row] for row in b.tolist()]
    logits = [
        [scale * sum(x * y for x, y in zip(unit_a[i], unit_b[j], strict=True)) for j in range(n)]
        for i in range(n)
    ]
    match = [[i == j for j in range(n)] for i in range(n)] if positives is None else positives

    def direction(rows, is_positive) -> float:
        total = 0.0
        for i, row in enumerate(rows):
            log_norm = math.log(sum(math.exp(v) for v in row))
            chosen = [row[j] - log_norm for j in range(n) if is_positive(i, j)]
            total += -sum(chosen) / len(chosen)
        return total / n

    forward = direction(logits, lambda i, j: bool(match[i][j]))
    columns = [[logits[i][j] for i in range(n)] for j in range(n)]
    backward = direction(columns, lambda j, i: bool(match[i][j]))
    return (forward + backward) / 2


LABELS = [0, 1, 0, 2, 1, 0]


def label_positives(labels=LABELS) -> torch.Tensor:
    keys = torch.tensor(labels)
    return keys[:, None] == keys[None, :]


# --------------------------------------------------------------------------- info_nce


@pytest.mark.parametrize("scale", [1.0, 1 / 0.07])
def test_info_nce_matches_loop_reference_on_the_diagonal(scale):
    a, b = batch()
    assert info_nce(a, b, scale).item() == pytest.approx(reference(a, b, scale), abs=1e-6)


@pytest.mark.parametrize("scale", [1.0, 1 / 0.07])
def test_info_nce_matches_loop_reference_with_positives(scale):
    a, b = batch()
    positives = label_positives()
    expected = reference(a, b, scale, positives.tolist())
    assert info_nce(a, b, scale, positives).item() == pytest.approx(expected, abs=1e-6)
    # labels that are not all diagonal really change the loss
    assert abs(expected - reference(a, b, scale)) > 1e-3


def test_asymmetric_positives_use_the_transpose_for_the_other_direction():
    a, b = batch()
    positives = torch.eye(6, dtype=torch.bool)
    positives[0, 3] = positives[4, 1] = True  # a0 matches b3, a4 matches b1: not symmetric
    expected = reference(a, b, 3.0, positives.tolist())
    assert info_nce(a, b, 3.0, positives).item() == pytest.approx(expected, abs=1e-6)


def test_identity_positives_equal_the_diagonal_loss():
    a, b = batch()
    eye = torch.eye(6, dtype=torch.bool)
    assert info_nce(a, b, 5.0, eye).item() == pytest.approx(info_nce(a, b, 5.0).item(), abs=1e-12)


def test_info_nce_is_symmetric_in_a_and_b():
    a, b = batch(seed=3)
    positives = label_positives()
    assert info_nce(a, b, 7.0).item() == pytest.approx(info_nce(b, a, 7.0).item(), abs=1e-12)
    assert info_nce(a, b, 7.0, positives).item() == pytest.approx(
        info_nce(b, a, 7.0, positives).item(), abs=1e-12
    )


def test_info_nce_normalises_rows_itself():
    a, b = batch()
    scaled = a * torch.tensor([[0.1], [3.0], [7.0], [1.0], [2.0], [0.5]], dtype=torch.float64)
    assert info_nce(scaled, b, 4.0).item() == pytest.approx(info_nce(a, b, 4.0).item(), abs=1e-12)


def test_aligned_batch_gives_near_zero_loss_and_shuffled_a_large_one():
    a = torch.eye(8, dtype=torch.float64)  # orthogonal rows: off-diagonal similarity 0
    assert info_nce(a, a.clone(), 100.0).item() < 1e-6
    shuffled = a[torch.tensor([1, 2, 3, 4, 5, 6, 7, 0])]  # every pair now mismatched
    assert info_nce(a, shuffled, 100.0).item() > 50


def test_row_without_positive_is_rejected():
    a, b = batch()
    positives = torch.eye(6, dtype=torch.bool)
    positives[2, 2] = False
    with pytest.raises(ValueError, match="at least one positive"):
        info_nce(a, b, 1.0, positives)


def test_shape_errors():
    a, b = batch()
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        info_nce(a, b[:5], 1.0)
    with pytest.raises(ValueError, match="positives"):
        info_nce(a, b, 1.0, torch.eye(5, dtype=torch.bool))


def test_gathered_info_nce_without_distributed_equals_info_nce():
    a, b = batch()
    keys = torch.tensor(LABELS)
    assert gathered_info_nce(a, b, 2.0).item() == pytest.approx(info_nce(a, b, 2.0).item())
    assert gathered_info_nce(a, b, 2.0, keys).item() == pytest.approx(
        info_nce(a, b, 2.0, label_positives()).item()
    )


# --------------------------------------------------------------------------- temperature


def test_temperature_starts_at_one_over_0_07():
    temperature = LearnedTemperature()
    assert temperature.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert temperature().item() == pytest.approx(1 / 0.07, rel=1e-6)


def test_scale_never_exceeds_100_even_when_the_optimiser_pushes_it_up():
    temperature = LearnedTemperature()
    optimiser = torch.optim.SGD(temperature.parameters(), lr=50.0)
    seen = []
    for _ in range(5):
        scale = temperature()
        seen.append(scale.item())
        (-scale).backward()  # rewards a larger scale
        optimiser.step()
        optimiser.zero_grad()
    seen.append(temperature().item())
    assert seen[0] == pytest.approx(1 / 0.07, rel=1e-6)
    assert max(seen) <= 100.0
    assert seen[-1] == pytest.approx(100.0)
    # the stored parameter is clamped too, so a push back down takes effect at once
    assert temperature.logit_scale.item() <= math.log(100.0) + 1e-6
    scale = temperature()
    scale.backward()  # now reward a smaller scale
    assert temperature.logit_scale.grad.item() > 0
    optimiser.step()
    assert temperature().item() < 100.0


def test_temperature_can_be_used_twice_in_one_graph():
    temperature = LearnedTemperature()
    a, b = batch()
    loss = info_nce(a.float(), b.float(), temperature()) + info_nce(
        b.float(), a.float(), temperature()
    )
    loss.backward()
    assert temperature.logit_scale.grad is not None


# --------------------------------------------------------------------------- several columns


def three_columns() -> dict[str, torch.Tensor]:
    a, b = batch(seed=1)
    c, _ = batch(seed=2)
    return {"image": a, "audio": b, "text": c}


def test_pair_losses_with_anchor_uses_exactly_the_anchor_pairs():
    embeddings = three_columns()
    image, audio, text = embeddings["image"], embeddings["audio"], embeddings["text"]
    expected = (info_nce(text, image, 3.0) + info_nce(text, audio, 3.0)) / 2
    got = pair_losses(embeddings, "text", 3.0)
    assert got.item() == pytest.approx(expected.item(), abs=1e-12)
    # the pair the anchor leaves out would change the mean if it were there
    all_pairs = pair_losses(embeddings, None, 3.0)
    assert abs(all_pairs.item() - got.item()) > 1e-6


def test_pair_losses_without_anchor_averages_all_pairs():
    embeddings = three_columns()
    image, audio, text = embeddings["image"], embeddings["audio"], embeddings["text"]
    expected = (
        info_nce(image, audio, 3.0) + info_nce(image, text, 3.0) + info_nce(audio, text, 3.0)
    ) / 3
    assert pair_losses(embeddings, None, 3.0).item() == pytest.approx(expected.item(), abs=1e-12)


def test_pair_losses_of_two_columns_is_the_pair_loss():
    a, b = batch()
    assert pair_losses({"x": a, "y": b}, None, 2.0).item() == pytest.approx(
        info_nce(a, b, 2.0).item(), abs=1e-12
    )


def test_pair_losses_takes_a_bound_loss():
    from functools import partial

    embeddings = three_columns()
    positives = label_positives()
    loss = partial(info_nce, positives=positives)
    image, audio, text = embeddings["image"], embeddings["audio"], embeddings["text"]
    expected = (info_nce(image, audio, 3.0, positives) + info_nce(image, text, 3.0, positives)) / 2
    got = pair_losses(embeddings, "image", 3.0, loss=loss)
    assert got.item() == pytest.approx(expected.item(), abs=1e-12)


def test_column_pairs():
    assert column_pairs(["a", "b", "c"], "b") == [("b", "a"), ("b", "c")]
    assert column_pairs(["a", "b", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]
    with pytest.raises(ValueError, match="anchor 'z'"):
        column_pairs(["a", "b"], "z")
    with pytest.raises(ValueError, match="at least two"):
        column_pairs(["a"])
