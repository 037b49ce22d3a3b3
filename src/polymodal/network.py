"""The multimodal network: one encoder per input, a fusion, one head per target.

Pure math, no device or logging code (that is Lightning's job). A batch is
`{input name: {"values", "present", "lengths"?}}`; the forward pass reads top to bottom.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from polymodal.config import ModelSettings
from polymodal.data.features import FittedSchema, InputState
from polymodal.data.problems import BadInputError
from polymodal.encoders import DEFAULT_ENCODERS, ENCODERS, EncodedInput
from polymodal.fusion import FUSIONS, Fused, pooled
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
        check_columns_apart(self.tasks, self.input_names)
        self.heads = nn.ModuleList(
            task.head(settings.dim, self.fusion.branches, settings.dropout) for task in self.tasks
        )

    def load_pretrained_weights(self) -> None:
        """Pretrained encoders are built from their architecture; this loads their sources'
        weights (at fit time; a saved model's weights come from its own file)."""
        for encoder in self.encoders:
            if hasattr(encoder, "load_pretrained"):
                encoder.load_pretrained()
        for _, part in self.pretrained_head_parts():
            part.load_pretrained()

    def pretrained_head_parts(self) -> list[tuple[str, nn.Module]]:
        """(state-dict prefix, module) of the pretrained parts of heads (a text target's
        pretrained decoder): each has load_pretrained, learning_rate_scales and
        frozen_state_names, with names relative to itself."""
        return [
            (f"heads.{index}.{name}.", module)
            for index, head in enumerate(self.heads)
            for name, module in head.named_modules()
            if name and hasattr(module, "load_pretrained")
        ]

    def learning_rate_scales(self) -> dict[str, float]:
        """Parameter name → factor on the learning rate: a fine-tuned pretrained backbone
        learns slower than the layers trained from scratch around it."""
        scales = {}
        for index, encoder in enumerate(self.encoders):
            if hasattr(encoder, "backbone"):
                for name, _ in encoder.backbone.named_parameters():
                    scales[f"encoders.{index}.backbone.{name}"] = encoder.choice.lr_scale
        for prefix, part in self.pretrained_head_parts():
            scales |= {prefix + name: s for name, s in part.learning_rate_scales().items()}
        return scales

    def frozen_state_names(self) -> set[str]:
        """State-dict keys of frozen pretrained backbones: they never change while training."""
        names = set()
        for index, encoder in enumerate(self.encoders):
            if getattr(encoder, "frozen", False):
                names |= {f"encoders.{index}.backbone.{k}" for k in encoder.backbone.state_dict()}
        for prefix, part in self.pretrained_head_parts():
            names |= {prefix + name for name in part.frozen_state_names()}
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
        return self.fuse_encoded(self.encode(batch))

    def fuse_encoded(self, encoded: dict[str, EncodedInput]) -> Fused:
        """The fusion of the encoded inputs, with the memory spans of the inputs whose
        tokens follow time (`Fused.timed`)."""
        fused = self.fusion(encoded)
        start, timed = fused.readout, []
        for name, encoder in zip(self.input_names, self.encoders, strict=True):
            end = start + encoded[name].tokens.shape[1]
            if getattr(encoder, "time_ordered", False):
                timed.append((start, end))
            start = end
        if start != fused.memory.shape[1]:  # a fusion whose memory is laid out otherwise
            return fused
        return fused._replace(timed=tuple(timed))

    def forward(self, batch: Batch, targets: dict | None = None) -> dict[str, torch.Tensor]:
        """Raw outputs per target: logits, standardised values for regression, generated
        hypotheses for text, embeddings for a match. Given `targets` (training),
        teacher-forced heads read theirs."""
        return self.head_outputs(self.encode(batch), targets)

    def head_outputs(
        self,
        encoded: dict[str, EncodedInput],
        targets: dict | None = None,
        fused: Fused | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every head's outputs from the encoded inputs (`fused`: their fusion, when the
        caller has it already)."""
        if fused is None and not all(task.fuses_apart for task in self.tasks):
            fused = self.fuse_encoded(encoded)  # a match alone never reads all inputs fused
        outputs = {}
        for name, task, head in zip(self.target_names, self.tasks, self.heads, strict=True):
            if task.fuses_apart:
                apart = {
                    column: self.fusion(alone(encoded, column)) for column in task.columns_apart
                }
                present = {column: encoded[column].mask.any(dim=1) for column in task.columns_apart}
                outputs[name] = head(apart, present)
                continue
            given = targets.get(name) if targets is not None and task.teacher_forced else None
            outputs[name] = head(fused, given[0]) if given is not None else head(fused)
        return outputs

    def embedding(
        self, encoded: dict[str, EncodedInput], column: str | None = None
    ) -> torch.Tensor:
        """One vector per row, [batch, dim]: the space a target defines for `column` (a match
        target's), else the pooled fusion the heads read. `Model.embed` masks every input
        but `column` before this."""
        fused = self.fusion(encoded)
        for task, head in zip(self.tasks, self.heads, strict=True):
            vector = task.embedding(head, fused, column)
            if vector is not None:
                return vector
        return pooled(fused)

    def class_vectors(self, column: str) -> tuple[list[str], torch.Tensor] | None:
        """The class vectors of the target whose space `embedding` gives for `column`
        (`Task.class_vectors`); None when that space has none."""
        for task, head in zip(self.tasks, self.heads, strict=True):
            if column in task.shared_space():
                return task.class_vectors(head)
        return None

    @property
    def teacher_forced(self) -> bool:
        """Whether some head's training outputs differ from what it predicts (a text head's
        logits vs the text it writes), so validation needs both."""
        return any(task.teacher_forced for task in self.tasks)


def alone(encoded: dict[str, EncodedInput], column: str) -> dict[str, EncodedInput]:
    """Every input but `column` masked, exactly as a missing input is (its tokens unread)."""
    return {
        name: item if name == column else EncodedInput(item.tokens, torch.zeros_like(item.mask))
        for name, item in encoded.items()
    }


def check_columns_apart(tasks: list, inputs: list[str]) -> None:
    """A head that reads columns fused alone needs each of them as an input."""
    for task in tasks:
        missing = [column for column in task.columns_apart if column not in inputs]
        if missing:
            raise BadInputError(
                f"target '{task.state.column}' reads {', '.join(missing)}, which the model "
                f"does not take as inputs (its inputs: {', '.join(inputs)})"
            )


def check_dropout_names(probability: float | Mapping[str, float], inputs: list[str]) -> None:
    """Chances given by name must name inputs: a misspelt column would silently drop nothing."""
    if not isinstance(probability, Mapping):
        return
    unknown = [name for name in probability if name not in inputs]
    if unknown:
        raise BadInputError(
            f"--modality-dropout names {', '.join(unknown)}, which the model does not take as "
            f"inputs (its inputs: {', '.join(inputs)})"
        )


def drop_modalities(
    batch: Batch,
    probability: float | Mapping[str, float],
    generator: torch.Generator | None = None,
) -> Batch:
    """Mark whole inputs absent at random (training only), keeping at least one per row, so the
    model learns to predict when a modality is missing. `probability` is one chance for every
    input or a chance per input name: a model that leans on its cleanest input learns to use
    the other when that one is dropped more often."""
    names = list(batch)
    chances = [
        probability.get(name, 0.0) if isinstance(probability, Mapping) else probability
        for name in names
    ]
    if max(chances, default=0.0) <= 0:
        return batch
    present = torch.stack([batch[name]["present"] for name in names], dim=1)
    rates = torch.tensor(chances, device=present.device)
    drop = torch.rand(present.shape, generator=generator, device=present.device) < rates
    kept = present & ~drop
    keep_one = present.any(dim=1) & ~kept.any(dim=1)
    if keep_one.any():  # restore one present input, chosen at random, where all were dropped
        scores = torch.rand(present.shape, generator=generator, device=present.device)
        choice = (scores * present).argmax(dim=1)
        kept[keep_one, choice[keep_one]] = True
    return {name: {**batch[name], "present": kept[:, index]} for index, name in enumerate(names)}
