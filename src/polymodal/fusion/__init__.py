"""Fusion strategies, one module each, registered into `FUSIONS`."""

from polymodal.fusion import attention, concat, late  # noqa: F401  (registration)
from polymodal.fusion.base import FUSIONS, Fused, pooled

__all__ = ["FUSIONS", "Fused", "pooled"]
