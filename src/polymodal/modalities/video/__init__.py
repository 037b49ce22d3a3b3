"""Video: PyAV decoding of evenly sampled frames, a per-frame CNN with a temporal transformer
(or a pretrained video or image backbone), shifts, pixel noise and blur, per-frame shares."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from polymodal.encoders.base import lengths_mask
from polymodal.modalities.base import EncodeContext, FitContext, Sweep, Widget, register
from polymodal.modalities.common import shares
from polymodal.modalities.image import PixelModality
from polymodal.modalities.image.augment import augment_images
from polymodal.modalities.image.noise import pixel_sweeps
from polymodal.modalities.video import encoder  # noqa: F401  (registers the encoders)
from polymodal.modalities.video.preprocess import VideoState, encode_video, fit_video
from polymodal.modalities.video.pretrained import per_frame_tokens, video_tokens


@register
class Video(PixelModality):
    name = "video"
    state = VideoState
    files = continuous = pretrained = True
    tower = "vision_model"
    rank = 3  # a video column also feeds its sound track's audio input
    formats = ("MP4", "MOV", "AVI", "MKV", "WebM")
    sniffed = frozenset({"video"})
    widget = Widget("file", accept="video/*", preview="video")
    query = "video"

    def fit(self, cells: list, column: str, source: str, context: FitContext) -> VideoState:
        settings = context.settings.video
        return fit_video(
            cells, column, context.base_dir, settings, source, context.pretrained,
            whole=context.whole_clips,
        )  # fmt: skip

    def encode(self, state: VideoState, cells: list, context: EncodeContext) -> Any:
        c = context
        return encode_video(state, cells, c.base_dir, c.log, c.cache, c.row_ids)

    def augment(self, values: torch.Tensor) -> torch.Tensor:
        """The same kind of shift as images, drawn per frame."""
        batch, frames = values.shape[:2]
        return augment_images(values.flatten(0, 1)).view(batch, frames, *values.shape[2:])

    def sweeps(self, state: VideoState, item: dict, cells: list, base_dir: Any) -> list[Sweep]:
        return pixel_sweeps(state.column, state.std, item["values"].float(), axes=(3, 4))

    def summarise(self, state: VideoState, item: Any) -> dict:
        """Shares per real frame (frames padding a short clip read at `fps` are left out)."""
        scores = item.attributions[: real_frames(item)]
        return {"frame_share": shares(np.abs(scores).reshape(scores.shape[0], -1).sum(axis=1))}

    def figure(self, state: VideoState, item: Any) -> Any:
        from polymodal.modalities.video.figures import video_figure

        return video_figure(state, item)

    def backbone_tokens(
        self, backbone: Any, pretrained: Any, values: torch.Tensor, lengths: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = video_tokens(backbone, pretrained, values)
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        if lengths is not None and per_frame_tokens(pretrained):  # padded frames: not real
            mask = lengths_mask(lengths.to(hidden.device), hidden.shape[1])
        return hidden, mask


def real_frames(item: Any) -> int:
    """Frames of an `InputAttribution` that hold the clip, not padding."""
    return item.length if item.length else item.attributions.shape[0]
