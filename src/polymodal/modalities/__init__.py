"""One folder per modality, each registered by kind into `MODALITIES` (see `base.Modality`).

Importing this package registers every modality and its encoders; the list of kinds comes
from the registry: `MODALITIES.names()`.
"""

from polymodal.modalities import audio, category, image, number, text, video  # noqa: F401
from polymodal.modalities.base import (
    MODALITIES,
    Modality,
    file_kinds,
    kinds,
    modality,
    query_kinds,
)

__all__ = ["MODALITIES", "Modality", "file_kinds", "kinds", "modality", "query_kinds"]
