"""Two processes (gloo on CPU): the gathered "local loss" against the single-process loss.

Each rank gets half of a fixed batch, passes its ``a`` rows through a small projection wrapped
in ``DistributedDataParallel`` and computes ``gathered_info_nce``. The convention under test
(see ``polymodal.tasks.match.loss``): the mean of the per-rank losses is the full-batch loss;
DDP's averaged parameter gradient is the full-batch gradient; a rank's own feature rows receive
``world_size`` times their full-batch gradient (which DDP's division by ``world_size`` cancels);
the learned scale's gradient, averaged over ranks as DDP would, is the full-batch one.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from polymodal.tasks.match import gathered_info_nce, info_nce

WORLD, N, D = 2, 8, 5
KEYS = [0, 1, 2, 0, 1, 3, 0, 2]  # labels shared within and across the two halves
# one row of each half left out (a missing column): both halves keep three rows
VALID = torch.tensor([True, False, True, True, True, True, False, True])
SCALE = 4.0


def fixed_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    a = torch.randn(N, D, generator=generator, dtype=torch.float64)
    b = torch.randn(N, D, generator=generator, dtype=torch.float64)
    return a, b, torch.tensor(KEYS)


def projection() -> nn.Linear:
    torch.manual_seed(0)  # the same weights on every rank and in the single process
    return nn.Linear(D, D, dtype=torch.float64)


def step(a, b, keys, distributed: bool) -> dict[str, torch.Tensor]:
    """One forward and backward; the features and the scale are leaves that keep their grads."""
    layer = projection()
    model = nn.parallel.DistributedDataParallel(layer) if distributed else layer
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    scale = torch.tensor(SCALE, dtype=torch.float64, requires_grad=True)
    if distributed:
        loss = gathered_info_nce(model(a), b, scale, keys)
    else:
        positives = None if keys is None else keys[:, None] == keys[None, :]
        loss = info_nce(model(a), b, scale, positives)
    loss.backward()
    return {
        "loss": loss.detach(),
        "a": a.grad,
        "b": b.grad,
        "scale": scale.grad,
        "weight": layer.weight.grad,
        "bias": layer.bias.grad,
    }


def worker(rank: int, port: int, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        a, b, keys = fixed_batch()
        rows = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
        results = {
            "diagonal": step(a[rows], b[rows], None, distributed=True),
            "keys": step(a[rows], b[rows], keys[rows], distributed=True),
        }
        for case, by_key in (("masked diagonal", None), ("masked keys", keys[rows])):
            loss = gathered_info_nce(a[rows], b[rows], SCALE, by_key, VALID[rows])
            results[case] = {"loss": loss.detach()}
        torch.save(results, Path(out) / f"rank{rank}.pt")
        # both ranks done before either closes its connections: a rank that tore its process
        # group down while the other still read its last gather aborted that one (SIGABRT,
        # seen once in a loaded `make test`)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, dict[str, torch.Tensor]]]:
    out = tmp_path_factory.mktemp("local-loss")
    mp.spawn(worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{rank}.pt") for rank in range(WORLD)]


@pytest.mark.skipif(not dist.is_available(), reason="torch built without distributed")
@pytest.mark.parametrize("case", ["diagonal", "keys"])
def test_local_loss_matches_the_single_process_full_batch(ranks, case):
    a, b, keys = fixed_batch()
    single = step(a, b, keys if case == "keys" else None, distributed=False)
    per_rank = [results[case] for results in ranks]

    # the mean of the per-rank losses is the full-batch loss
    mean_loss = sum(r["loss"] for r in per_rank) / WORLD
    torch.testing.assert_close(mean_loss, single["loss"], rtol=0, atol=1e-6)
    # the halves really differ, so the mean is not trivially one rank's value
    assert abs(per_rank[0]["loss"] - per_rank[1]["loss"]) > 1e-3

    # each rank's own rows get world_size × their full-batch gradient
    for rank, result in enumerate(per_rank):
        rows = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
        torch.testing.assert_close(result["a"] / WORLD, single["a"][rows], rtol=0, atol=1e-6)
        torch.testing.assert_close(result["b"] / WORLD, single["b"][rows], rtol=0, atol=1e-6)

    # parameters: DDP's average (the same on every rank) is the full-batch gradient
    for name in ("weight", "bias"):
        for result in per_rank:
            torch.testing.assert_close(result[name], single[name], rtol=0, atol=1e-6)

    # the scale is not inside DDP here: averaging its gradients as DDP would gives the full one
    mean_scale_grad = sum(r["scale"] for r in per_rank) / WORLD
    torch.testing.assert_close(mean_scale_grad, single["scale"], rtol=0, atol=1e-6)


def test_keys_change_the_loss():
    a, b, keys = fixed_batch()
    assert abs(step(a, b, keys, False)["loss"] - step(a, b, None, False)["loss"]) > 1e-3


@pytest.mark.skipif(not dist.is_available(), reason="torch built without distributed")
@pytest.mark.parametrize("case", ["masked diagonal", "masked keys"])
def test_rows_left_out_are_neither_scored_nor_scored_against(ranks, case):
    """With as many valid rows on each rank, the mean of the per-rank losses is the
    single-process loss over the valid rows alone."""
    a, b, keys = fixed_batch()
    kept = VALID
    positives = None
    if case == "masked keys":
        positives = keys[kept][:, None] == keys[kept][None, :]
    single = info_nce(a[kept], b[kept], SCALE, positives)
    mean_loss = sum(results[case]["loss"] for results in ranks) / WORLD
    torch.testing.assert_close(mean_loss, single, rtol=0, atol=1e-6)
