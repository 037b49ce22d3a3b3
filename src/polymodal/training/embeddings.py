"""The embedding cache: a frozen pretrained encoder runs once per row, not once per epoch.

Before training, each input read by a frozen encoder is replaced by its backbone's summarised
tokens, so every epoch trains only the projection, fusion and heads. Embeddings are stored on
disk like decoded features (`FeatureCache`), keyed by the row's feature bytes and a hash of
the backbone's weights: a second run on the same data, or on a table sharing files, skips the
backbone entirely, and different weights can never produce a stale hit.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from polymodal.data.cache import FeatureCache, settings_key
from polymodal.network import MultimodalNet
from polymodal.progress import progress_bar

Item = dict[str, torch.Tensor]
BATCH = 64


def embed_frozen_inputs(
    net: MultimodalNet, inputs: dict[str, Item], cache: FeatureCache, batch_size: int = BATCH
) -> dict[str, Item]:
    """`inputs` with every frozen encoder's input replaced by {"embedding", "embedding_mask",
    "present"}; the network reads those directly (MultimodalNet.encode)."""
    out = dict(inputs)
    for name, encoder in zip(net.input_names, net.encoders, strict=True):
        if getattr(encoder, "frozen", False):
            out[name] = embed_column(encoder, name, inputs[name], cache, batch_size)
    return out


def embed_column(
    encoder: torch.nn.Module, name: str, item: Item, cache: FeatureCache, batch_size: int
) -> Item:
    settings = settings_key({"embedding": encoder.fingerprint()})
    present = item["present"]
    keys = [row_key(item, row) if present[row] else "" for row in range(len(present))]
    found: dict[str, np.ndarray] = {}
    for key in set(keys) - {""}:
        cached = cache.get(key, settings)
        if cached is not None:
            found[key] = cached
    todo = sorted({key: row for row, key in enumerate(keys) if key and key not in found}.values())
    arrays = compute(encoder, name, item, todo, batch_size) if todo else []
    for array, row in zip(arrays, todo, strict=True):
        found[keys[row]] = array
        cache.put(keys[row], settings, array)
    return stack(keys, found, present)


def row_key(item: Item, row: int) -> str:
    """Content of one row's features (values and length): equal rows share an embedding."""
    digest = hashlib.sha256(item["values"][row].contiguous().numpy().tobytes())
    if "lengths" in item:
        digest.update(str(int(item["lengths"][row])).encode())
    return digest.hexdigest()[:32]


def compute(
    encoder: torch.nn.Module, name: str, item: Item, rows: list[int], batch_size: int
) -> list[np.ndarray]:
    """Summaries for `rows` as arrays [tokens, width + 1] (the last column is the mask)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    original = next(encoder.parameters()).device
    encoder.to(device).eval()
    chunks = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    arrays: list[np.ndarray] = []
    with torch.inference_mode():
        for chunk in progress_bar(chunks, len(chunks), f"embed {name}", minimum=2):
            index = torch.as_tensor(chunk)
            lengths = item["lengths"][index].to(device) if "lengths" in item else None
            summary, mask = encoder.embed(
                item["values"][index].to(device), item["present"][index].to(device), lengths
            )
            joined = torch.cat([summary.float(), mask[..., None].float()], dim=-1).cpu().numpy()
            arrays.extend(joined)
    encoder.to(original)
    return arrays


def stack(keys: list[str], found: dict[str, np.ndarray], present: torch.Tensor) -> Item:
    """Rows' summaries as one block; absent rows (and shorter summaries) are zero and masked."""
    shapes = [array.shape for array in found.values()] or [(1, 2)]
    tokens, width = max(s[0] for s in shapes), shapes[0][1]
    block = np.zeros((len(keys), tokens, width), dtype=np.float32)
    for row, key in enumerate(keys):
        if key:
            block[row, : found[key].shape[0]] = found[key]
    return {
        "embedding": torch.from_numpy(block[..., :-1].copy()),
        "embedding_mask": torch.from_numpy(block[..., -1] > 0.5),
        "present": present,
    }
