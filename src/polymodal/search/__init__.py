"""Search across modalities: an on-disk vector index (LanceDB) of embeddings with metadata."""

from __future__ import annotations

from polymodal.search.index import Index, IndexSettings, Metric

__all__ = ["Index", "IndexSettings", "Metric"]
