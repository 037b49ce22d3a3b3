"""One module per modality; each registers its encoders into `ENCODERS`."""

from polymodal.encoders import audio, image, pretrained, tabular, text, video  # noqa: F401
from polymodal.encoders.base import DEFAULT_ENCODERS, ENCODERS, EncodedInput

__all__ = ["DEFAULT_ENCODERS", "ENCODERS", "EncodedInput"]
