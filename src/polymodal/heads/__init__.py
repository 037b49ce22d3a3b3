"""Task heads, registered into `HEADS` under their task name."""

from polymodal.heads import classification, regression  # noqa: F401  (registration)
from polymodal.heads.base import HEADS, Head

__all__ = ["HEADS", "Head"]
