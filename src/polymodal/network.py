"""The multimodal network: one encoder per input, a fusion, one head per target.

Pure math, no device or logging code (that is Lightning's job). A batch is
`{input name: {"values", "present", "lengths"?}}`; the forward pass reads top to bottom.
"""

from __future__ import annotations

import torch
from torch import nn

from polymodal.config import ModelSettings
from polymodal.data.features import FittedSchema, InputState
from polymodal.data.problems import BadInputError
from polymodal.encoders import DEFAULT_ENCODERS, ENCODERS, EncodedInput
from polymodal.fusion import FUSIONS, Fused
from polymodal.tasks import task_for

Batch = dict[str, dict[str, torch.Tensor]]


def encoder_name(state: InputState, settings: ModelSettings) -> str:
    """A column's encoder: pretrained if its state says so (fitting resolved the source),
    else the one named for the column, else for its kind, else the kind's default."""
    if getattr(state, "pretrained", None):
        return f"pretrained_{state.kind}"
    choice = settings.encoder_choice(state.column, state.kind)
    name = choice.source if choice else DEFAULT_ENCODERS[state.kind]
    if ENCODERS.tags(name).get("pretrained"):
        raise BadInputError(
            f"column '{state.column}': {name} is chosen by its source: hf:NAME, timm:NAME or a folder"
        )
    return name


class MultimodalNet(nn.Module):
    def __init__(self, schema: FittedSchema, settings: ModelSettings) -> None:
        super().__init__()
        self.input_names = [state.column for state in schema.inputs]
        self.input_kinds = {state.column: state.kind for state in schema.inputs}
        self.target_names = [state.column for state in schema.targets]
        # ModuleDict keys cannot hold dots, and column names may; index them instead.
        self.encoders = nn.ModuleList(
            ENCODERS.create(encoder_name(state, settings), state, settings)
            for state in schema.inputs
        )
        self.fusion = FUSIONS.create(settings.fusion, self.input_names, settings)
        self.tasks = [task_for(state) for state in schema.targets]
        self.heads = nn.ModuleList(
            task.head(settings.dim, self.fusion.branches, settings.dropout) for task in self.tasks
        )

    def load_pretrained_weights(self) -> None:
        """Pretrained encoders are built from their architecture; this loads their sources'
        weights (at fit time; a saved model's weights come from its own file)."""
        for encoder in self.encoders:
            if hasattr(encoder, "load_pretrained"):
                encoder.load_pretrained()

    def learning_rate_scales(self) -> dict[str, float]:
        """Parameter name → factor on the learning rate: a fine-tuned pretrained backbone
        learns slower than the layers trained from scratch around it."""
        scales = {}
        for index, encoder in enumerate(self.encoders):
            if hasattr(encoder, "backbone"):
                for name, _ in encoder.backbone.named_parameters():
                    scales[f"encoders.{index}.backbone.{name}"] = encoder.choice.lr_scale
        return scales

    def frozen_state_names(self) -> set[str]:
        """State-dict keys of frozen pretrained backbones: they never change while training."""
        names = set()
        for index, encoder in enumerate(self.encoders):
            if getattr(encoder, "frozen", False):
                names |= {f"encoders.{index}.backbone.{k}" for k in encoder.backbone.state_dict()}
        return names

    def encode(self, batch: Batch) -> dict[str, EncodedInput]:
        encoded = {}
        for name, encoder in zip(self.input_names, self.encoders, strict=True):
            item = batch[name]
            if "embedding" in item:  # a frozen encoder's cached output (training.embeddings)
                encoded[name] = encoder.from_embedding(
                    item["embedding"], item["embedding_mask"], item["present"]
                )
            else:
                encoded[name] = encoder(item["values"], item["present"], item.get("lengths"))
        return encoded

    def fuse(self, batch: Batch) -> Fused:
        return self.fusion(self.encode(batch))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Raw outputs per target: logits, or standardised values for regression."""
        fused = self.fuse(batch)
        return {name: head(fused) for name, head in zip(self.target_names, self.heads, strict=True)}


def drop_modalities(
    batch: Batch, probability: float, generator: torch.Generator | None = None
) -> Batch:
    """Mark whole inputs absent at random (training only), keeping at least one per row, so the
    model learns to predict when a modality is missing."""
    if probability <= 0:
        return batch
    names = list(batch)
    present = torch.stack([batch[name]["present"] for name in names], dim=1)
    drop = torch.rand(present.shape, generator=generator, device=present.device) < probability
    kept = present & ~drop
    keep_one = present.any(dim=1) & ~kept.any(dim=1)
    if keep_one.any():  # restore one present input, chosen at random, where all were dropped
        scores = torch.rand(present.shape, generator=generator, device=present.device)
        choice = (scores * present).argmax(dim=1)
        kept[keep_one, choice[keep_one]] = True
    return {name: {**batch[name], "present": kept[:, index]} for index, name in enumerate(names)}
