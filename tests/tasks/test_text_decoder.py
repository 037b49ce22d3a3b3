"""The text decoder: masks, causality, the key/value cache against full forwards, greedy and beam
search (beam 1 is greedy, beam search is never worse by its own objective), and overfitting."""

import pytest
import torch

from polymodal.tasks.text.decoder import DecoderCache, TextDecoder
from polymodal.tasks.text.search import beam_search, greedy

VOCAB, DIM, PAD, BOS, EOS = 20, 16, 0, 1, 2


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: extra threads gain nothing and on a loaded machine cost a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_decoder(seed: int, max_length: int = 12, eos_boost: float = 0.0) -> TextDecoder:
    """A random decoder in eval mode. Freshly initialised ones tend to repeat one token forever;
    large position embeddings and `eos_boost` (added to EOS's logit) make them end at varied
    lengths instead of at once or never."""
    torch.manual_seed(seed)
    decoder = TextDecoder(VOCAB, DIM, layers=2, heads=4, max_length=max_length, dropout=0.1)
    with torch.no_grad():
        decoder.position_embedding.weight.normal_(0.0, 2.0)
        decoder.output_bias[EOS] += eos_boost
    return decoder.eval()


def make_memory(seed: int, batch: int = 4, length: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    memory = torch.randn(batch, length, DIM, generator=generator)
    real = torch.randint(1, length + 1, (batch,), generator=generator)
    real[0] = length
    mask = torch.arange(length)[None, :] < real[:, None]
    return memory, mask


def make_tokens(seed: int, batch: int = 4, length: int = 7) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, VOCAB, (batch, length), generator=generator)
    tokens[:, 0] = BOS
    return tokens


def normalised(log_probability: torch.Tensor, ids: torch.Tensor, max_length: int, penalty: float):
    """score = sum / length ** penalty, length counting EOS unless cut off at max_length."""
    produced = (ids != PAD).sum(-1)
    length = torch.where(produced < max_length, produced + 1, produced)
    return log_probability / length.float() ** penalty


def test_masked_memory_changes_nothing_and_real_memory_does():
    decoder = make_decoder(0)
    memory, mask = make_memory(1)
    mask[1, 3:] = False
    tokens = make_tokens(2)
    changed = memory.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), DIM) * 100
    with torch.no_grad():
        assert torch.equal(decoder(tokens, memory, mask), decoder(tokens, changed, mask))
        ids, lp = greedy(decoder, memory, mask, 10)
        ids2, lp2 = greedy(decoder, changed, mask, 10)
        assert torch.equal(ids, ids2) and torch.equal(lp, lp2)

        real = memory.clone()
        real[1, 1] += torch.randn(DIM)
        before, after = decoder(tokens, memory, mask), decoder(tokens, real, mask)
        assert not torch.allclose(before[1], after[1])
        assert torch.equal(before[0], after[0])  # other rows are untouched
        assert not torch.allclose(greedy(decoder, real, mask, 10)[1][1], lp[1])


def test_fully_masked_memory_gives_finite_outputs():
    decoder = make_decoder(0)
    memory, mask = make_memory(1)
    mask[2] = False
    with torch.no_grad():
        assert torch.isfinite(decoder(make_tokens(2), memory, mask)).all()
        logits, _ = decoder.step(torch.full((4,), BOS), decoder.start(memory, mask))
        assert torch.isfinite(logits).all()


def test_causality():
    decoder = make_decoder(3)
    memory, mask = make_memory(4)
    tokens = make_tokens(5)
    with torch.no_grad():
        base = decoder(tokens, memory, mask)
        for t in range(1, tokens.shape[1]):
            changed = tokens.clone()
            changed[:, t] = (changed[:, t] + 1 - 3) % (VOCAB - 3) + 3
            logits = decoder(changed, memory, mask)
            assert torch.equal(logits[:, :t], base[:, :t])
            assert not torch.allclose(logits[:, t], base[:, t])


def test_cache_matches_full_forward():
    decoder = make_decoder(6)
    memory, mask = make_memory(7)
    tokens = make_tokens(8, length=9)
    with torch.no_grad():
        full = decoder(tokens, memory, mask)
        cache = decoder.start(memory, mask)
        for t in range(tokens.shape[1]):
            logits, cache = decoder.step(tokens[:, t], cache)
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=0)
            slow = decoder.step_without_cache(tokens[:, : t + 1], memory, mask)
            torch.testing.assert_close(logits, slow, atol=1e-5, rtol=0)
        assert cache.position == tokens.shape[1]
        assert cache.self_keys[0].shape == (4, 4, tokens.shape[1], DIM // 4)


def test_greedy_equals_beam_of_one():
    lengths = set()
    for seed in range(4):
        for boost in (1.0, 2.0):
            decoder = make_decoder(seed, eos_boost=boost)
            memory, mask = make_memory(seed + 10, batch=6)
            with torch.no_grad():
                ids, lp = greedy(decoder, memory, mask, 10)
                beam_ids, beam_lp = beam_search(decoder, memory, mask, beam=1, max_length=10)
            assert beam_ids.shape[1] == 1
            assert torch.equal(beam_ids[:, 0], ids)
            torch.testing.assert_close(beam_lp[:, 0], lp, atol=1e-5, rtol=0)
            lengths |= set((ids != PAD).sum(-1).tolist())
    assert lengths & set(range(1, 10)), "the check should cover outputs ending before the limit"


def test_greedy_without_cache_matches():
    decoder = make_decoder(11, eos_boost=2.0)
    memory, mask = make_memory(12, batch=5)
    with torch.no_grad():
        ids, lp = greedy(decoder, memory, mask, 10)
        slow_ids, slow_lp = greedy(decoder, memory, mask, 10, use_cache=False)
    assert torch.equal(ids, slow_ids)
    torch.testing.assert_close(lp, slow_lp, atol=1e-5, rtol=0)


def teacher_forced_log_probability(decoder, memory, mask, ids, max_length):
    """Sum of log-softmax of ids (+ EOS unless cut off at max_length) under a full forward."""
    produced = ids[ids != PAD]
    target = produced.tolist() + ([EOS] if len(produced) < max_length else [])
    tokens = torch.tensor([[BOS, *target]])
    logits = decoder(tokens, memory[None], mask[None])[0, :-1].float()
    log_probs = torch.log_softmax(logits, -1)
    return log_probs[torch.arange(len(target)), torch.tensor(target)].sum()


@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_beam_search_never_worse_than_greedy_and_log_probabilities_are_true(penalty):
    max_length = 8
    for seed in range(6):
        decoder = make_decoder(seed, max_length=max_length, eos_boost=2.0)
        memory, mask = make_memory(seed + 20, batch=3)
        with torch.no_grad():
            ids, lp = greedy(decoder, memory, mask, max_length)
            beam_ids, beam_lp = beam_search(
                decoder,
                memory,
                mask,
                beam=4,
                max_length=max_length,
                length_penalty=penalty,
                nbest=3,
            )
            assert beam_ids.shape[:2] == (3, 3)
            greedy_score = normalised(lp, ids, max_length, penalty)
            scores = normalised(beam_lp, beam_ids, max_length, penalty)
            assert (scores[:, 0] >= greedy_score - 1e-5).all()
            assert (scores[:, :-1] >= scores[:, 1:]).all()
            for b in range(3):
                for n in range(3):
                    expected = teacher_forced_log_probability(
                        decoder, memory[b], mask[b], beam_ids[b, n], max_length
                    )
                    torch.testing.assert_close(beam_lp[b, n], expected, atol=1e-4, rtol=0)
                    assert (beam_ids[b, n] != EOS).all()


def test_beam_search_arguments():
    decoder = make_decoder(0)
    memory, mask = make_memory(1)
    with pytest.raises(ValueError):
        beam_search(decoder, memory, mask, beam=2, max_length=5, nbest=3)
    with pytest.raises(ValueError):
        greedy(decoder, memory, mask, max_length=decoder.max_length + 1)


def test_inference_mode():
    decoder = make_decoder(0, eos_boost=2.0)
    memory, mask = make_memory(1)
    with torch.inference_mode():
        ids, lp = greedy(decoder, memory, mask, 6)
        beam_ids, beam_lp = beam_search(decoder, memory, mask, beam=3, max_length=6, nbest=2)
    assert ids.dtype == torch.long and lp.dtype == torch.float32
    assert beam_ids.shape[:2] == (4, 2) and torch.isfinite(beam_lp).all()


def test_overfits_two_examples():
    torch.manual_seed(0)
    decoder = TextDecoder(VOCAB, DIM, layers=2, heads=4, max_length=8, dropout=0.0)
    memory = torch.randn(2, 3, DIM)
    mask = torch.ones(2, 3, dtype=torch.bool)
    targets = [[5, 7, 3, 9, 11], [4, 4, 8]]
    inputs = torch.full((2, 6), PAD)
    labels = torch.full((2, 6), PAD)
    for row, target in enumerate(targets):
        inputs[row, : len(target) + 1] = torch.tensor([BOS, *target])
        labels[row, : len(target) + 1] = torch.tensor([*target, EOS])
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    decoder.train()
    for _ in range(200):
        logits = decoder(inputs, memory, mask)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=PAD
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    decoder.eval()
    with torch.no_grad():
        ids, _ = greedy(decoder, memory, mask, 8)
        beam_ids, _ = beam_search(decoder, memory, mask, beam=3, max_length=8)
    for row, target in enumerate(targets):
        assert ids[row][ids[row] != PAD].tolist() == target
        assert beam_ids[row, 0][beam_ids[row, 0] != PAD].tolist() == target


def test_reorder_selects_rows():
    decoder = make_decoder(0)
    memory, mask = make_memory(1, batch=3)
    tokens = make_tokens(2, batch=3, length=3)
    indices = torch.tensor([2, 0, 2])
    with torch.no_grad():
        cache = decoder.start(memory, mask)
        for t in range(3):
            _, cache = decoder.step(tokens[:, t], cache)
        picked = TextDecoder.reorder(cache, indices)
        assert isinstance(picked, DecoderCache) and picked.position == cache.position
        for name in ("self_keys", "self_values", "cross_keys", "cross_values"):
            for mine, theirs in zip(getattr(picked, name), getattr(cache, name), strict=True):
                assert torch.equal(mine, theirs[indices])
        assert torch.equal(picked.memory_mask, mask[indices])
        following = torch.tensor([5, 6, 7])
        logits, _ = decoder.step(following[indices], picked)
        expected, _ = decoder.step(following, cache)
        torch.testing.assert_close(logits, expected[indices], atol=1e-6, rtol=0)
