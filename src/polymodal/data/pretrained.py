"""A pretrained encoder as fitted; what it dictates to preprocessing (tokenizer, image size
and normalisation, audio feature extractor, frames per clip) lives in each modality's folder.

Everything is read from the source once, at fit time, into plain values kept in the fitted
schema (config.json), so a saved model preprocesses offline exactly as in training.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from polymodal.config import EncoderChoice
from polymodal.hub import ResolvedSource, read_architecture, resolve_source


class PretrainedState(BaseModel):
    """A pretrained encoder as fitted: the user's choice, where it was read from, and the
    architecture that rebuilds it without the source."""

    choice: EncoderChoice
    library: str
    folder: str
    architecture: dict
    feature_extractor: dict = Field(default_factory=dict, description="audio: its settings")
    input_name: str = Field("", description="audio: the backbone's input argument")

    def resolved(self) -> ResolvedSource:
        return ResolvedSource(self.choice.source, self.library, Path(self.folder))


def fit_pretrained(choice: EncoderChoice, key: str) -> PretrainedState:
    resolved = resolve_source(choice.source, key)
    return PretrainedState(
        choice=choice,
        library=resolved.library,
        folder=str(resolved.folder),
        architecture=read_architecture(resolved),
    )
