"""Cheap, batched augmentation of decoded features during training.

Each modality augments its own features (`Modality.augment`): small random shifts for images
and video frames, SpecAugment-style time and frequency masks for audio; the others pass
through. They cost little next to the encoders. Off by default (`train.augment`): on AV-MNIST
they slowed convergence within the default 15 epochs (test accuracy 0.905 with, 0.929
without, both with modality dropout 0.2).
"""

from __future__ import annotations

from polymodal.modalities import modality


def augment_batch(inputs: dict, kinds: dict[str, str]) -> dict:
    """A new batch with each input's features augmented by its modality (cached embeddings,
    which carry no `values`, are left as they are)."""
    out = {}
    for name, item in inputs.items():
        if "values" not in item:
            out[name] = item
            continue
        out[name] = {**item, "values": modality(kinds[name]).augment(item["values"])}
    return out
