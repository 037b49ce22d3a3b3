"""Generation cost with and without the key/value cache, and of beam search, at a fixed length.

The decoder is the one a text target trains (model width 128, 2 layers, 4 heads) over a
memory the size of a few seconds of audio plus video tokens; it is told never to end early
(the end token's logit is pushed down), so every run writes exactly `--length` tokens. Both
paths run side by side in one process, so the ratio holds on any CPU.

    .venv/bin/python benchmarks/text_decoding.py [--length 50] [--batch 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import machine
from polymodal.tasks.text.decoder import TextDecoder
from polymodal.tasks.text.search import beam_search, greedy


def timed(run: object, repeats: int) -> float:
    """Median seconds of `repeats` calls (after one warm-up)."""
    run()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--memory", type=int, default=120, help="memory tokens per row")
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    decoder = TextDecoder(args.vocab, 128, layers=2, heads=4, max_length=args.length).eval()
    with torch.no_grad():
        decoder.output_bias[decoder.eos_id] = -1e4  # never stop early: exactly `length` tokens
    memory = torch.randn(args.batch, args.memory, 128)
    mask = torch.ones(args.batch, args.memory, dtype=torch.bool)
    print(machine())
    print(f"batch {args.batch}, {args.memory} memory tokens, {args.length} tokens written")
    with torch.inference_mode():
        ids, _ = greedy(decoder, memory, mask, args.length)
        assert ids.shape[1] == args.length, ids.shape
        cached = timed(lambda: greedy(decoder, memory, mask, args.length), args.repeats)
        uncached = timed(
            lambda: greedy(decoder, memory, mask, args.length, use_cache=False), args.repeats
        )
        beam = timed(
            lambda: beam_search(decoder, memory, mask, beam=4, max_length=args.length),
            args.repeats,
        )
    print(f"greedy with the cache:    {cached:.3f} s")
    print(f"greedy without the cache: {uncached:.3f} s")
    print(f"speed-up from the cache:  {uncached / cached:.1f}x (goal >= 3x)")
    print(f"beam 4 with the cache:    {beam:.3f} s ({beam / cached:.1f}x greedy)")


if __name__ == "__main__":
    main()
