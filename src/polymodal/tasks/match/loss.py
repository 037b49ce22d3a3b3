"""Contrastive losses for the match task: several columns trained into one embedding space.

Features in, loss out (open_clip's ``loss.py`` shape): nothing here sees a model or a batch
dictionary, so every function can be tested alone.

* :class:`LearnedTemperature` holds CLIP's learned logit scale (starts at 1/0.07, never above
  100).
* :func:`info_nce` is the symmetric InfoNCE loss over in-batch negatives, or its supervised
  contrastive form (SupCon-style) when a positives matrix says which pairs match.
* :func:`gathered_info_nce` is the same loss under several processes: features are gathered
  across ranks with gradient and each rank scores only its own rows (open_clip's "local loss"),
  so memory grows linearly with the batch.
* :func:`pair_losses` averages a pair loss over the column pairs of three or more columns
  (every column against an anchor, ImageBind's recipe, or all pairs).

**Gradient convention of the distributed loss.** Each rank returns the mean loss over its own
rows (both directions averaged), exactly as open_clip does. With equal local batches:

* the mean of the per-rank losses equals the single-process full-batch loss;
* ``DistributedDataParallel`` averages gradients across ranks (it all-reduces a sum, then divides
  by the world size), and the gradient of any parameter after that average equals the gradient
  of the single-process full-batch loss: no extra scaling is needed;
* before that average, the gradient that reaches one rank's own features (through the
  all-gather's backward, which sums what every rank sent back) is ``world_size`` times the
  full-batch gradient of those rows; DDP's division by ``world_size`` cancels that factor.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from itertools import combinations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LearnedTemperature",
    "column_pairs",
    "gathered_info_nce",
    "info_nce",
    "pair_losses",
    "world_size",
]

INITIAL_SCALE = 1 / 0.07
MAX_SCALE = 100.0


class LearnedTemperature(nn.Module):
    """CLIP's learned inverse temperature, kept as a log scale so it stays positive.

    ``logit_scale`` starts at ``log(1/0.07)``; :meth:`forward` returns ``exp(logit_scale)``, at
    most ``max_scale``. The bound is enforced in ``forward`` rather than after the optimiser step
    (open_clip's ``logit_scale.clamp_`` in its training loop) so no trainer hook can be
    forgotten: ``forward`` first clamps the parameter in place under ``no_grad``, so its stored
    value never drifts above ``log(max_scale)`` and a gradient asking for a smaller scale takes
    effect at once (clamping only the returned value would give a zero gradient above the bound
    and could leave the parameter stuck there). The scale is computed as
    ``max_scale * exp(logit_scale - log(max_scale))``, which cannot round above ``max_scale``.
    """

    def __init__(self, initial: float = INITIAL_SCALE, max_scale: float = MAX_SCALE) -> None:
        super().__init__()
        if not 0 < initial <= max_scale:
            raise ValueError(f"need 0 < initial ({initial}) <= max_scale ({max_scale})")
        self.max_scale = max_scale
        self.logit_scale = nn.Parameter(torch.tensor(math.log(initial)))

    def forward(self) -> Tensor:
        log_max = math.log(self.max_scale)
        with torch.no_grad():
            self.logit_scale.clamp_(max=log_max)
        # exp(x - log_max) <= exp(0) = 1 exactly once x <= log_max, so the product never rounds
        # above max_scale (exp(log(100)) itself can) and no clamp cuts the gradient at the bound
        return self.max_scale * torch.exp(self.logit_scale - log_max)


def _supervised_rows(logits: Tensor, positives: Tensor) -> Tensor:
    """Mean over rows of (minus) the mean log-softmax over each row's positives."""
    counts = positives.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("every row needs at least one positive (a pair is its own positive)")
    log_probs = logits.log_softmax(dim=1)
    per_row = -(log_probs * positives).sum(dim=1) / counts
    return per_row.mean()


def info_nce(
    a: Tensor, b: Tensor, scale: Tensor | float, positives: Tensor | None = None
) -> Tensor:
    """Symmetric InfoNCE between the rows of ``a`` [n, d] and ``b`` [n, d] (row i of each is a pair).

    Rows are L2-normalised here; logits are ``scale * a @ b.T``. Without ``positives`` the
    targets are the diagonal: cross-entropy over the rows (a→b) and over the columns (b→a),
    averaged. With ``positives`` (bool [n, n], ``positives[i, j]``: ``a[i]`` and ``b[j]`` match,
    e.g. same label) each row's loss is the mean of ``-log softmax`` over its positives (SupCon),
    in both directions (the b→a side uses ``positives.T``), averaged; every row and column needs
    at least one positive. ``positives`` equal to the identity gives the diagonal loss.
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must both be [n, d], got {tuple(a.shape)} and {tuple(b.shape)}")
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    if positives is None:
        targets = torch.arange(len(a), device=a.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    if positives.shape != logits.shape:
        raise ValueError(f"positives must be [{len(a)}, {len(a)}], got {tuple(positives.shape)}")
    positives = positives.to(device=logits.device, dtype=logits.dtype)
    return (_supervised_rows(logits, positives) + _supervised_rows(logits.T, positives.T)) / 2


def _gather(tensor: Tensor) -> Tensor:
    """All ranks' ``tensor`` concatenated along rows, with gradient flowing back to each rank."""
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        # deprecated in favour of a private functional-collectives API; still the public one
        warnings.filterwarnings(
            "ignore", message=".*all_gather is deprecated", category=FutureWarning
        )
        return torch.cat(all_gather(tensor), dim=0)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def world_size() -> int:
    """Processes in the current process group (1 without one)."""
    return _world()[1]


MASKED = -1e9  # a logit that softmax gives no weight, and that is 0 (not NaN) times a 0 weight


def gathered_info_nce(
    a: Tensor,
    b: Tensor,
    scale: Tensor | float,
    positives_key: Tensor | None = None,
    valid: Tensor | None = None,
) -> Tensor:
    """:func:`info_nce` for this rank's rows against every rank's rows ("local loss").

    When ``torch.distributed`` is initialised with more than one process, ``a`` and ``b`` (and
    ``positives_key``) are gathered from all ranks, the gradient flowing back through the
    gather; this rank's rows of ``a`` are scored against all of ``b`` and its rows of ``b``
    against all of ``a``, the targets offset by ``rank * local batch``. Every rank must pass the
    same local batch size. ``positives_key`` is an optional 1-D tensor of this rank's row keys
    (e.g. label ids): rows with equal keys are positives (supervised contrastive). ``valid``
    (bool, one per row) leaves rows out on both sides (a pair with a missing column): they are
    still gathered, so every rank takes part in the same collectives, but they are never
    scored nor scored against. The result is the mean over this rank's (valid) rows; see the
    module docstring for why DDP's gradient average then gives the full-batch gradient. In a
    single process it equals :func:`info_nce` over the valid rows.
    """
    if positives_key is not None and (positives_key.ndim != 1 or len(positives_key) != len(a)):
        raise ValueError(f"positives_key must be 1-D with {len(a)} keys")
    if valid is not None and (valid.ndim != 1 or len(valid) != len(a)):
        raise ValueError(f"valid must be 1-D with {len(a)} flags")
    rank, world = _world()
    if world == 1:
        if valid is not None:
            a, b = a[valid], b[valid]
            positives_key = None if positives_key is None else positives_key[valid]
        positives = None if positives_key is None else positives_key[:, None] == positives_key
        return info_nce(a, b, scale, positives)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must both be [n, d], got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    all_a, all_b = _gather(a), _gather(b)
    logits_a = scale * a @ all_b.T  # this rank's a rows against every b
    logits_b = scale * b @ all_a.T  # this rank's b rows against every a
    mine = torch.ones(len(a), dtype=torch.bool, device=a.device) if valid is None else valid
    everyone = _gather_keys(mine.to(torch.uint8)).bool()
    logits_a = logits_a.masked_fill(~everyone[None], MASKED)
    logits_b = logits_b.masked_fill(~everyone[None], MASKED)
    if not bool(mine.any()):
        return (logits_a.sum() + logits_b.sum()) * 0.0  # nothing of ours to score
    logits_a, logits_b = logits_a[mine], logits_b[mine]
    if positives_key is None:
        targets = (torch.arange(len(a), device=a.device) + rank * len(a))[mine]
        return (F.cross_entropy(logits_a, targets) + F.cross_entropy(logits_b, targets)) / 2
    all_keys = _gather_keys(positives_key)
    positives = ((positives_key[:, None] == all_keys) & everyone[None])[mine].to(logits_a.dtype)
    return (_supervised_rows(logits_a, positives) + _supervised_rows(logits_b, positives)) / 2


def _gather_keys(keys: Tensor) -> Tensor:
    gathered = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, keys.contiguous())
    return torch.cat(gathered)


def column_pairs(columns: list[str], anchor: str | None = None) -> list[tuple[str, str]]:
    """The column pairs a multi-column match trains: ``(anchor, column)`` for every other column
    when ``anchor`` is given, else every unordered pair in the given order."""
    if len(columns) < 2:
        raise ValueError(f"need at least two columns to match, got {columns}")
    if anchor is None:
        return list(combinations(columns, 2))
    if anchor not in columns:
        raise ValueError(f"anchor {anchor!r} is not one of the columns {columns}")
    return [(anchor, column) for column in columns if column != anchor]


def pair_losses(
    embeddings: dict[str, Tensor],
    anchor: str | None,
    scale: Tensor | float,
    loss: Callable[[Tensor, Tensor, Tensor | float], Tensor] = info_nce,
) -> Tensor:
    """The **mean** of ``loss`` over the pairs of :func:`column_pairs` (anchor pairs when
    ``anchor`` is given, ImageBind's recipe; else all pairs).

    A mean, not a sum, so the loss (and a learning rate tuned on it) keeps its size whatever the
    number of columns, and two columns give exactly the pair loss. ``loss`` defaults to
    :func:`info_nce`; bind extra arguments with ``functools.partial`` (a positives matrix, or
    ``gathered_info_nce`` with ``positives_key``).
    """
    pairs = column_pairs(list(embeddings), anchor)
    return torch.stack([loss(embeddings[x], embeddings[y], scale) for x, y in pairs]).mean()
