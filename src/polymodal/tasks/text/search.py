"""Greedy and beam-search generation with a `TextDecoder`.

Both searches never choose the pad or BOS token (they would make the returned ids ambiguous), but
log-probabilities are always the model's full log-softmax over the whole vocabulary, computed in
float32, so they equal what a teacher-forced forward over [BOS] + ids + [EOS] gives.

Beam search ranks finished hypotheses by simple length normalisation:
``score = sum(log_probability) / length ** length_penalty``, where ``length`` counts the generated
tokens including EOS (a hypothesis cut off at ``max_length`` has length ``max_length``).
``length_penalty=0`` ranks by raw log-probability; larger values favour longer outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from polymodal.tasks.text.decoder import TextDecoder


def _check_length(decoder: TextDecoder, max_length: int) -> None:
    if not 1 <= max_length <= decoder.max_length:
        raise ValueError(f"max_length {max_length} must be in 1..{decoder.max_length}")


def _log_probabilities(decoder: TextDecoder, logits: Tensor) -> Tensor:
    """float32 log-softmax over the whole vocabulary, then pad/BOS set to -inf so they are never
    chosen; the other entries keep their true values."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    log_probs[:, [decoder.pad_id, decoder.bos_id]] = float("-inf")
    return log_probs


def greedy(
    decoder: TextDecoder,
    memory: Tensor,
    memory_mask: Tensor,
    max_length: int,
    use_cache: bool = True,
    choose: Callable[[Tensor, int], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Most likely token at each step -> (ids [B, L] without BOS/EOS, pad after the end,
    L <= max_length; log_probability [B] float32, including the EOS step when EOS came).
    `choose(log_probs [B, vocab], step) -> tokens [B]` picks each step's token instead of the
    most likely one (`sampler`: sampling, a forced prefix)."""
    _check_length(decoder, max_length)
    device = memory.device
    memory_mask = memory_mask.to(device=device, dtype=torch.bool)
    batch = memory.shape[0]
    tokens = torch.full((batch,), decoder.bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    total = torch.zeros(batch, dtype=torch.float32, device=device)
    chosen: list[Tensor] = []
    cache = decoder.start(memory, memory_mask) if use_cache else None
    prefix = tokens[:, None]
    for step in range(max_length):
        if cache is not None:
            logits, cache = decoder.step(tokens, cache)
        else:
            logits = decoder.step_without_cache(prefix, memory, memory_mask)
        log_probs = _log_probabilities(decoder, logits)
        best = log_probs.argmax(dim=-1) if choose is None else choose(log_probs, step)
        best_log_prob = log_probs.gather(1, best[:, None])[:, 0]
        total = total + torch.where(finished, 0.0, best_log_prob)
        best = torch.where(finished, decoder.pad_id, best)
        ended = best == decoder.eos_id
        lengths = lengths + (~finished & ~ended).long()
        finished = finished | ended
        tokens = best
        chosen.append(torch.where(ended, decoder.pad_id, best))
        if cache is None:
            prefix = torch.cat([prefix, tokens[:, None]], dim=1)
        if bool(finished.all()):
            break
    ids = torch.stack(chosen, dim=1)
    return ids[:, : int(lengths.max())], total


def sampler(
    noise: Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    forced: Tensor | None = None,
    pad_id: int = 0,
) -> Callable[[Tensor, int], Tensor]:
    """A `choose` for `greedy` that samples: the Gumbel-max trick, argmax of log p / temperature
    plus `noise` [B, steps, vocab] (standard Gumbel, drawn by the caller, so that a row's
    sample depends on its own noise alone), among the `top_k` most likely tokens (0: all).
    `forced` [B, P]: tokens taken at the first P steps whatever the model says (a given
    opening); `pad_id` entries are not forced."""

    def choose(log_probs: Tensor, step: int) -> Tensor:
        scores = log_probs / max(temperature, 1e-6)
        if top_k:
            kth = scores.topk(min(top_k, scores.shape[1]), dim=1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        picked = (scores + noise[:, step].to(scores.device)).argmax(dim=-1)
        if forced is not None and step < forced.shape[1]:
            given = forced[:, step].to(picked.device)
            picked = torch.where(given != pad_id, given, picked)
        return picked

    return choose


def beam_search(
    decoder: TextDecoder,
    memory: Tensor,
    memory_mask: Tensor,
    beam: int,
    max_length: int,
    length_penalty: float = 1.0,
    nbest: int = 1,
) -> tuple[Tensor, Tensor]:
    """Beam search -> (ids [B, nbest, L], raw log_probability [B, nbest] float32), best first by
    the length-normalised score (see the module docstring).

    Alive beams are ranked by raw log-probability. An EOS candidate among a step's `beam` best
    becomes a finished hypothesis; each batch row keeps its `beam` best finished ones. A row stops
    at `max_length` (its alive beams then join the finished ones) or once it has `beam` finished
    hypotheses and its best alive beam, normalised at its current length, does not beat the worst
    of them. (Stopping at the first `beam` finished, with length normalisation, often returns
    short hypotheses worse than greedy's.) With beam=1 this is exactly `greedy`. Rows run batched
    as B*beam decoder rows; rows that stop are dropped from the batch. If fewer than `nbest`
    hypotheses exist (only with a vocabulary smaller than the beam), the missing ones are empty
    with log-probability -inf.
    """
    if beam < 1:
        raise ValueError(f"beam must be at least 1, got {beam}")
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be in 1..beam ({beam}), got {nbest}")
    _check_length(decoder, max_length)
    device = memory.device
    memory_mask = memory_mask.to(device=device, dtype=torch.bool)
    batch = memory.shape[0]
    vocab = decoder.vocab_size
    # Cross-attention keys/values are computed once per batch row and copied to its beams.
    cache = decoder.start(memory, memory_mask)
    cache = decoder.reorder(cache, torch.arange(batch, device=device).repeat_interleave(beam))
    # Only the first beam starts alive, so the first step does not pick the same token `beam` times.
    scores = torch.full((batch, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0
    history = torch.zeros(batch, beam, 0, dtype=torch.long, device=device)
    tokens = torch.full((batch * beam,), decoder.bos_id, dtype=torch.long, device=device)
    active = list(range(batch))  # the original batch row of each row still searched
    finished: list[list[tuple[float, float, Tensor]]] = [[] for _ in range(batch)]

    def keep_best(row: int) -> None:
        finished[row].sort(key=lambda hypothesis: hypothesis[0], reverse=True)
        del finished[row][beam:]

    for step in range(1, max_length + 1):
        logits, cache = decoder.step(tokens, cache)
        rows = len(active)
        log_probs = _log_probabilities(decoder, logits)
        candidates = (scores.reshape(-1, 1) + log_probs).view(rows, beam * vocab)
        # Each beam has one EOS candidate, so the best 2*beam hold at least `beam` others.
        top_scores, top_index = candidates.topk(min(2 * beam, beam * vocab), dim=1)
        source = top_index // vocab
        token = top_index % vocab
        is_eos = token == decoder.eos_id
        normaliser = float(step) ** length_penalty

        rank = torch.arange(top_index.shape[1], device=device)
        new_finished = is_eos & (rank < beam) & torch.isfinite(top_scores)
        if bool(new_finished.any()):
            for i, r in new_finished.nonzero().tolist():
                raw = float(top_scores[i, r])
                ids = history[i, int(source[i, r])]
                finished[active[i]].append((raw / normaliser, raw, ids))
                keep_best(active[i])

        # The `beam` best non-EOS candidates continue (the stable sort keeps rank order).
        keep = torch.argsort(is_eos.to(torch.int8), dim=1, stable=True)[:, :beam]
        scores = top_scores.gather(1, keep)
        source = source.gather(1, keep)
        token = token.gather(1, keep)
        parent = (torch.arange(rows, device=device)[:, None] * beam + source).reshape(-1)
        previous = history.reshape(rows * beam, step - 1)[parent].view(rows, beam, step - 1)
        history = torch.cat([previous, token[..., None]], dim=2)

        if step == max_length:
            # The alive beams of rows still searched finish as they are.
            for i, row in enumerate(active):
                for k in range(beam):
                    raw = float(scores[i, k])
                    if raw != float("-inf"):
                        finished[row].append((raw / normaliser, raw, history[i, k]))
                keep_best(row)
            break

        best_alive = (scores[:, 0] / normaliser).tolist()  # scores stay sorted best first
        still = [
            i
            for i, row in enumerate(active)
            if best_alive[i] != float("-inf")
            and (len(finished[row]) < beam or best_alive[i] > finished[row][-1][0])
        ]
        if len(still) < rows:
            kept = torch.tensor(still, dtype=torch.long, device=device)
            parent = parent.view(rows, beam)[kept].reshape(-1)
            scores, history, token = scores[kept], history[kept], token[kept]
            active = [active[i] for i in still]
            if not active:
                break
        cache = decoder.reorder(cache, parent)
        tokens = token.reshape(-1)

    return _best(decoder, finished, nbest, device)


def _best(
    decoder: TextDecoder,
    finished: list[list[tuple[float, float, Tensor]]],
    nbest: int,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Pack each row's `nbest` best hypotheses, with the EOS removed, into padded tensors."""
    chosen = [sorted(hyps, key=lambda h: h[0], reverse=True)[:nbest] for hyps in finished]
    length = max((len(ids) for hyps in chosen for _, _, ids in hyps), default=0)
    ids = torch.full((len(finished), nbest, length), decoder.pad_id, dtype=torch.long)
    log_probability = torch.full((len(finished), nbest), float("-inf"))
    for b, hyps in enumerate(chosen):
        for n, (_, raw, hyp) in enumerate(hyps):
            ids[b, n, : len(hyp)] = hyp.cpu()
            log_probability[b, n] = raw
    return ids.to(device), log_probability.to(device)
