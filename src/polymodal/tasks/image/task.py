"""Image targets: an image column generated from every other input by conditional flow
matching (`flow.py`: a small U-Net cross-attending to the fused token memory).

The target's size and channels are fitted on the training images as the image modality fits
an input's; images are learned in [-1, 1]. Early stopping ranks epochs by minus the validation
flow loss on fixed noise (generating every validation row each epoch would cost `steps` times
two network passes). `predict` writes one PNG per row into `image_dir` (a decoding setting the
caller chooses) and returns its path; each PNG carries a provenance mark (`provenance.py`).
`evaluate` reports the pixel RMSE of the sample against the row's real image, a rough figure:
many images fit one condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError, model_validator
from torch import nn

from polymodal.config import ImageSettings, Strict, TargetConfig
from polymodal.data.column import is_missing
from polymodal.data.problems import BadInputError, DecodeError
from polymodal.data.sniff import IMAGE_EXTENSIONS
from polymodal.modalities.image.preprocess import decode_image, fit_image
from polymodal.tasks.base import (
    TargetPrediction,
    TargetState,
    Task,
    mean_over_known,
    one_line,
    paths_ending,
    register_task,
    target_options,
)
from polymodal.tasks.files import safe_stem, write_new
from polymodal.tasks.image.flow import FlowHead
from polymodal.tasks.image.provenance import (
    data_url,
    png_bytes,
    read_mark,
)

DECODING = ("guidance", "steps", "seed", "image_dir", "relative_to")


class ImageOptions(Strict):
    """An image target's settings (YAML: `targets: [{column: image, task: image, options:
    {...}}]`); the sampling ones can be changed at prediction time (`set_decoding`)."""

    size: int | None = Field(None, ge=8, le=128, description="square side; None: from the data")
    channels: Literal[1, 3] | None = Field(None, description="1 grey, 3 colour; None: from data")
    width: int = Field(32, ge=8, description="U-Net channels at full resolution (x2 at half)")
    heads: int = Field(4, ge=1, description="cross-attention heads")
    ema: float = Field(
        0.995, ge=0, lt=1, description="decay of the weights' moving average kept; 0: none"
    )
    condition_dropout: float = Field(
        0.1, ge=0, lt=1, description="training: chance a row's whole condition is dropped"
    )
    guidance: float = Field(
        2.0, ge=0, description="classifier-free guidance; 0: unconditional, 1: conditional"
    )
    steps: int = Field(32, ge=1, le=1000, description="Euler steps per sample")
    seed: int = Field(0, ge=0, description="sampling seed (each row's noise: seed and row)")
    image_dir: str | None = Field(None, description="predict: folder the PNGs are written to")
    relative_to: str | None = Field(
        None, description="predict: paths are written relative to this folder; None: as is"
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ImageOptions:
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        return self


class FittedImage(ImageOptions):
    size: int
    channels: Literal[1, 3]


class ImagePrediction(TargetPrediction):
    predicted: str  # a data: URL of the PNG


@register_task
class ImageTask(Task):
    name = "image"
    metrics: ClassVar[dict[str, bool]] = {"pixel_rmse": False}
    score_metric = "pixel_rmse"
    inference_order = 1  # a column of image files as the target is an image to generate
    explained = "1 - pixel RMSE against the image generated with every input"
    teacher_forced = True
    attributable = False
    takes_options = True
    reads_files = True
    decoding = DECODING
    scored_by_loss = True
    generates = "image/png"

    def __init__(self, state: TargetState) -> None:
        super().__init__(state)
        self.image = FittedImage.model_validate(state.options)
        self.first_row = 0
        self._head: FlowHead | None = None

    # ---------------------------------------------------------------- the target
    @classmethod
    def count_generated(cls, paths: Sequence[str]) -> int:
        """PNGs carrying the `polymodal:generated` mark (other files are never opened)."""
        return sum(path.lower().endswith(".png") and read_mark(path) is not None for path in paths)

    @classmethod
    def claims(cls, values: list) -> bool:
        return paths_ending(values, IMAGE_EXTENSIONS)

    @classmethod
    def fit(cls, values: list, config: TargetConfig, table_name: str) -> TargetState:
        """Size and channels from a sample of the training images, as for an image input."""
        options = target_options(ImageOptions, config, table_name, cls.name)
        settings = ImageSettings(size=options.size, channels=options.channels)
        fitted = fit_image(values, config.column, Path("."), settings, config.column)
        state = options.model_dump() | {"size": fitted.size, "channels": fitted.channels}
        return TargetState(column=config.column, task=cls.name, weight=config.weight, options=state)

    def encode(self, cells: list) -> tuple[np.ndarray, np.ndarray]:
        """Images [rows, C, S, S] in [-1, 1] (float16); a missing or unreadable file is
        unknown (adds no loss)."""
        size, channels = self.image.size, self.image.channels
        values = np.zeros((len(cells), channels, size, size), np.float16)
        known = np.zeros(len(cells), bool)
        for row, cell in enumerate(cells):
            if is_missing(cell):
                continue
            try:
                pixels = decode_image(Path(str(cell)).read_bytes(), size, channels)
            except (OSError, DecodeError):
                continue
            values[row], known[row] = pixels * 2.0 - 1.0, True
        return values, known

    def set_decoding(self, options: dict[str, Any]) -> bool:
        """Guidance, steps, seed and where PNGs go, for later predictions."""
        try:
            checked = FittedImage.model_validate(self.image.model_dump() | options)
        except ValidationError as error:
            raise BadInputError(f"image target '{self.state.column}': {one_line(error)}") from None
        for key in options:
            setattr(self.image, key, getattr(checked, key))  # the head reads this object
        self.state.options = self.image.model_dump()
        return True

    @property
    def weight_averaging(self) -> float:
        return self.image.ema

    def number_rows(self, first: int) -> None:
        self.first_row = first
        if self._head is not None:
            self._head.next_row = first

    # ------------------------------------------------------------- the network
    @property
    def outputs(self) -> int:
        return self.image.channels * self.image.size**2

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.image.channels, self.image.size, self.image.size)

    def head(self, dim: int, branches: int, dropout: float) -> nn.Module:
        self._head = FlowHead(self.image, dim, self.image.width, self.image.heads, dropout)
        return self._head

    def loss(
        self, outputs: torch.Tensor, target: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        """Flow matching: mean squared error between predicted and true velocities
        (`outputs` [batch, 2, C, S, S]), over rows with a known image."""
        predicted, true = outputs[:, 0].float(), outputs[:, 1].float()
        return mean_over_known(((predicted - true) ** 2).mean(dim=(1, 2, 3)), known)

    def validation_score(self, outputs: np.ndarray, true: np.ndarray, known: np.ndarray) -> float:
        """Minus the flow loss on the validation rows (fixed noise: comparable epochs)."""
        if not known.any():
            return float("nan")
        per_row = ((outputs[:, 0] - outputs[:, 1]) ** 2).mean(axis=(1, 2, 3))
        return -float(per_row[known].mean())

    # --------------------------------------------------------------- decoding
    def decode(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """Images [rows, C, S, S] in [-1, 1] → uint8 pixels [rows, S, S, C]."""
        scaled = np.rint((np.clip(outputs, -1.0, 1.0) + 1.0) * 127.5)
        return {"pixels": scaled.astype(np.uint8).transpose(0, 2, 3, 1)}

    def combine(self, decoded: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The first model's samples: a mean of several samples would be a blur, not one."""
        return decoded[0]

    def mark(self, row: int) -> dict[str, Any]:
        """The provenance mark of row `row`'s sample."""
        settings = {key: getattr(self.image, key) for key in ("seed", "steps", "guidance")}
        return {"generated": True, **self.origin, "column": self.state.column, "row": row} | (
            settings
        )

    def columns(self, decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One PNG per row written into `image_dir`; the column holds their paths."""
        pixels = decoded["pixels"]
        paths = np.empty(len(pixels), dtype=object)
        if len(pixels) and not self.image.image_dir:
            raise BadInputError(
                f"image target '{self.state.column}': say where the generated PNGs go: "
                "Model.set_decoding(image_dir=...) (CLI: --image-dir)"
            )
        stem = safe_stem(self.state.column, "image")
        for index, image in enumerate(pixels):
            row = self.first_row + index
            data = png_bytes(image, self.mark(row))
            path = write_new(Path(self.image.image_dir or "."), f"{stem}-{row:06d}", data, ".png")
            paths[index] = (
                str(path.relative_to(self.image.relative_to))
                if (self.image.relative_to)
                else str(path)
            )
        return {f"{self.state.column}_predicted": paths}

    def prediction(self, decoded: dict[str, np.ndarray], row: int) -> ImagePrediction:
        return ImagePrediction(predicted=data_url(decoded["pixels"][row], self.mark(row)))

    # ---------------------------------------------------------------- scoring
    def evaluate(self, true: np.ndarray, known: np.ndarray, decoded: dict) -> dict:
        """Pixel RMSE (0-1 scale) of each sample against the row's real image."""
        if not known.any():
            return {"rows": 0}
        real = (true[known].astype(np.float32) + 1.0) / 2.0
        made = decoded["pixels"][known].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        return {"rows": int(known.sum()), "pixel_rmse": float(np.sqrt(((made - real) ** 2).mean()))}

    # ------------------------------------------------------------ explanation
    def reference(self, decoded: dict[str, np.ndarray]) -> tuple[np.ndarray, list]:
        pixels = decoded["pixels"]
        return pixels, [f"generated {p.shape[1]}x{p.shape[0]} image" for p in pixels]

    def explained_value(self, decoded: dict[str, np.ndarray], reference: np.ndarray) -> np.ndarray:
        """1 - pixel RMSE of each row's sample against the one made with every input."""
        made = decoded["pixels"].astype(np.float32) / 255.0
        ref = reference.astype(np.float32) / 255.0
        return 1.0 - np.sqrt(((made - ref) ** 2).mean(axis=(1, 2, 3)))
