"""The encoder contract and registry; the encoders themselves live in each modality's folder
(`polymodal.modalities.image.encoder`, ...) and register into `ENCODERS` when imported."""

import polymodal.modalities  # noqa: F401  (registers every modality's encoders)
from polymodal.encoders.base import DEFAULT_ENCODERS, ENCODERS, EncodedInput

__all__ = ["DEFAULT_ENCODERS", "ENCODERS", "EncodedInput"]
