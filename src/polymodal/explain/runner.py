"""Re-running a model many times on the same rows, with inputs removed or replaced.

Shapley values need 2^n runs, noise sweeps and attacks dozens. The encoders are most of a
run's cost and an encoder's output depends only on its own input, so each input is encoded
once and only the fusion and heads run again. Removing an input clears its encoded mask,
which is what `present = False` does inside every encoder (`mask & present`), so the result
equals `Model.forward` with the input marked absent (a test checks this).
"""

from __future__ import annotations

import numpy as np
import torch

from polymodal.encoders.base import EncodedInput
from polymodal.explain.scoring import Features
from polymodal.model import PREDICT_BATCH, Model

Encoded = dict[str, EncodedInput]


def rows_of(features: Features, index: torch.Tensor) -> Features:
    return {name: {k: v[index] for k, v in item.items()} for name, item in features.items()}


def without(encoded: Encoded, keep: set[str] | frozenset[str]) -> Encoded:
    return {
        name: item if name in keep else EncodedInput(item.tokens, torch.zeros_like(item.mask))
        for name, item in encoded.items()
    }


class Runner:
    """Cached encodings of every input, in batches of rows, for one model and table."""

    def __init__(self, model: Model, features: Features, batch_size: int = PREDICT_BATCH) -> None:
        self.model = model
        self.net = model.net_
        self.net.eval()
        self.features = features
        total = len(next(iter(features.values()))["present"])
        self.chunks = [
            torch.arange(start, min(start + batch_size, total))
            for start in range(0, total, batch_size)
        ]
        with torch.no_grad():  # plain tensors (not inference tensors): attacks reuse them
            self.encoded = [self.net.encode(rows_of(features, index)) for index in self.chunks]

    def encoder(self, name: str) -> torch.nn.Module:
        return self.net.encoders[self.net.input_names.index(name)]

    def encode_one(self, name: str, item: dict) -> EncodedInput:
        return self.encoder(name)(item["values"], item["present"], item.get("lengths"))

    def heads(self, encoded: Encoded, targets: dict | None = None) -> dict[str, torch.Tensor]:
        """Every head's outputs; with `targets`, a teacher-forced head's training outputs (the
        ones its loss is defined on)."""
        return self.net.head_outputs(encoded, targets)

    def outputs(
        self, keep: set[str] | frozenset[str] | None = None, replace: Features | None = None
    ) -> dict[str, np.ndarray]:
        """Raw outputs per target with only `keep` present (None: all) and the inputs in
        `replace` re-encoded from new feature items (e.g. noisy values)."""
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in self.net.target_names}
        with torch.no_grad():
            for index, cached in zip(self.chunks, self.encoded, strict=True):
                encoded = dict(cached)
                for name, item in (replace or {}).items():
                    merged = {**self.features[name], **item}
                    encoded[name] = self.encode_one(name, {k: v[index] for k, v in merged.items()})
                if keep is not None:
                    encoded = without(encoded, keep)
                for name, output in self.heads(encoded).items():
                    parts[name].append(output.float())
        return {name: torch.cat(chunks).numpy() for name, chunks in parts.items()}

    def forward_with(
        self, chunk: int, name: str, values: torch.Tensor, targets: dict | None = None
    ) -> dict[str, torch.Tensor]:
        """Outputs of batch `chunk` with `name`'s values replaced, differentiable in `values`
        (for attacks: `targets` gives the outputs the loss is defined on); the other inputs'
        cached encodings are reused."""
        index = self.chunks[chunk]
        item = {k: v[index] for k, v in self.features[name].items()}
        encoded = dict(self.encoded[chunk])
        encoded[name] = self.encode_one(name, {**item, "values": values})
        return self.heads(encoded, targets)
