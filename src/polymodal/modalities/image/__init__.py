"""Images: Pillow decoding, a small CNN (or a pretrained vision backbone), random shifts,
pixel noise and blur, saliency overlays, and a file upload with the camera on the page."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from polymodal.modalities.base import EncodeContext, FitContext, Modality, Sweep, Widget, register
from polymodal.modalities.common import shares
from polymodal.modalities.image import encoder  # noqa: F401  (registers the encoders)
from polymodal.modalities.image.augment import augment_images
from polymodal.modalities.image.noise import PIXEL_EPSILONS, PIXEL_UNIT, pixel_scale, pixel_sweeps
from polymodal.modalities.image.preprocess import ImageState, encode_images, fit_image
from polymodal.modalities.image.pretrained import image_tokens


class PixelModality(Modality):
    """Images and video frames: attacked in pixel units (ε on the 0–1 pixel scale)."""

    def epsilons(self) -> tuple[list[float], str]:
        return PIXEL_EPSILONS, PIXEL_UNIT

    def attack_scale(self, state: Any) -> torch.Tensor:
        return pixel_scale(state.std)


@register
class Image(PixelModality):
    name = "image"
    state = ImageState
    files = continuous = pretrained = True
    tower = "vision_model"
    rank = 1
    formats = ("PNG", "JPEG", "GIF", "BMP", "WebP", "TIFF")
    sniffed = frozenset({"image"})
    widget = Widget("file", accept="image/*", capture="camera", preview="img")
    query = "image"

    def fit(self, cells: list, column: str, source: str, context: FitContext) -> ImageState:
        settings = context.settings.image
        return fit_image(cells, column, context.base_dir, settings, source, context.pretrained)

    def encode(self, state: ImageState, cells: list, context: EncodeContext) -> Any:
        c = context
        return encode_images(state, cells, c.base_dir, c.log, c.cache, c.row_ids)

    def augment(self, values: torch.Tensor) -> torch.Tensor:
        return augment_images(values)

    def sweeps(self, state: ImageState, item: dict, cells: list, base_dir: Any) -> list[Sweep]:
        return pixel_sweeps(state.column, state.std, item["values"].float(), axes=(2, 3))

    def summarise(self, state: ImageState, item: Any) -> dict:
        """Shares of |attribution| on a 4 × 4 grid over the image."""
        mass = np.abs(item.attributions).sum(axis=0)
        side = mass.shape[0] // 4 or 1
        grid = mass[: side * 4, : side * 4].reshape(4, side, 4, side).sum(axis=(1, 3))
        return {"mass_4x4": np.asarray(shares(grid.reshape(-1))).reshape(4, 4).tolist()}

    def figure(self, state: ImageState, item: Any) -> Any:
        from polymodal.modalities.image.figures import image_figure

        return image_figure(state, item)

    def backbone_tokens(
        self, backbone: Any, pretrained: Any, values: torch.Tensor, lengths: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = image_tokens(backbone, pretrained.library, values.float())
        return hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
