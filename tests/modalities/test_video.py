"""Video: a good clip, a file without video, and garbage."""

from fractions import Fraction

import av
import numpy as np
import pandas as pd
import pytest
import torch

from polymodal.config import ModelSettings, VideoSettings
from polymodal.data.cache import FeatureCache, settings_key
from polymodal.data.problems import DecodeError, ProblemLog
from polymodal.modalities.video.encoder import VideoEncoder
from polymodal.modalities.video.preprocess import (
    MEAN,
    STD,
    VideoState,
    decode_video,
    decode_video_at_fps,
    encode_video,
    fit_video,
)
from polymodal.model import Model
from tests.media import tiny_config, write_mp4, write_wav
from tests.modalities.logs import reasons


def test_video_good_no_frames_and_garbage(tmp_path):
    write_mp4(tmp_path / "good.mp4", brightness=40)
    (tmp_path / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(200))
    frames = decode_video((tmp_path / "good.mp4").read_bytes(), frames=4, size=16)
    assert frames.shape == (4, 3, 16, 16) and np.isfinite(frames).all()
    write_wav(tmp_path / "sound_only.wav")
    with pytest.raises(DecodeError, match="no video stream"):
        decode_video((tmp_path / "sound_only.wav").read_bytes(), 4, 16)
    cells = ["good.mp4", "garbage.mp4"]
    state = fit_video(cells, "v", tmp_path, VideoSettings(frames=4, size=16), "v")
    log = ProblemLog()
    column = encode_video(state, cells, tmp_path, log, FeatureCache(enabled=False))
    assert column.present.tolist() == [True, False] and 1 in reasons(log)


# --------------------------------------------------------------- frames at a rate of clip time

MS = Fraction(1, 1000)


def write_timed_mp4(path, brightness: list[int], times: list[float] | None = None, rate=10):
    """Flat grey 16×16 frames of the given brightness, presented at `times` (seconds; by
    default frame i at i / rate): a clip whose every frame is known by its brightness."""
    times = times if times is not None else [i / rate for i in range(len(brightness))]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = MS
        for level, time in zip(brightness, times, strict=True):
            pixels = np.full((16, 16, 3), level, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = round(time * 1000), MS
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def brightness_of(frames: np.ndarray) -> np.ndarray:
    """Each decoded frame's mean brightness on the 0–255 scale."""
    return (frames.astype(np.float32) * STD + MEAN).mean(axis=(1, 2, 3)) * 255


def fps_settings(**settings) -> VideoSettings:
    return VideoSettings(size=16, **{"fps": 4.0, "max_seconds": 3.0, **settings})


def test_frames_at_a_rate_follow_clip_time(tmp_path):
    """A 3 s clip at 10 fps, each second its own brightness, read at 4 fps: 12 frames, four
    per second, each showing its own second (not 8 frames spread over the file)."""
    levels = [40, 120, 200]
    write_timed_mp4(tmp_path / "clip.mp4", [level for level in levels for _ in range(10)])
    state = fit_video(["clip.mp4"], "v", tmp_path, fps_settings(), "v")
    assert (state.fps, state.frames) == (4.0, 12)
    column = encode_video(state, ["clip.mp4"], tmp_path, ProblemLog(), FeatureCache(enabled=False))
    assert column.values.shape == (1, 12, 3, 16, 16) and column.lengths.tolist() == [12]
    seen = brightness_of(column.values[0])
    expected = np.repeat(levels, 4)
    assert np.abs(seen - expected).max() < 6, seen.round()


def test_each_sample_time_shows_the_latest_frame_presented_by_then(tmp_path):
    """Frame i of a 10 fps clip has brightness 10 + 8 i: at t = k / 4 the frame shown is
    floor(10 t), which an even spread over the file would not give (0, 3, 5, 8, ...)."""
    write_timed_mp4(tmp_path / "c.mp4", [10 + 8 * i for i in range(30)])
    frames = decode_video_at_fps((tmp_path / "c.mp4").read_bytes(), fps=4, frames=12, size=16)
    shown = np.round((brightness_of(frames) - 10) / 8).astype(int)
    assert shown.tolist() == [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27]


def test_variable_frame_rate_is_sampled_by_presentation_time(tmp_path):
    """Frames at 0, 0.9, 1.0, 1.1 and 2.0 s, the last shown for one period (0.1 s): at 2 fps
    the samples at 0, 0.5, 1.0, 1.5 and 2.0 s show frames 0, 0, 2, 3 and 4."""
    times = [0.0, 0.9, 1.0, 1.1, 2.0]
    write_timed_mp4(tmp_path / "vfr.mp4", [20 + 50 * i for i in range(5)], times=times)
    frames = decode_video_at_fps((tmp_path / "vfr.mp4").read_bytes(), fps=2, frames=10, size=16)
    shown = np.round((brightness_of(frames) - 20) / 50).astype(int)
    assert shown.tolist() == [0, 0, 2, 3, 4]


def test_short_clips_are_padded_and_their_padding_masked(tmp_path):
    """A 1.5 s clip in a 3 s crop at 4 fps keeps 6 real frames; the 7th to 12th are zeros,
    masked in the encoder's output and unseen by the real frames' tokens. A 5 s clip is
    cropped at 12 frames."""
    write_timed_mp4(tmp_path / "short.mp4", [100] * 15)
    write_timed_mp4(tmp_path / "long.mp4", [100] * 50)
    cells = ["short.mp4", "long.mp4", None]
    state = fit_video(cells, "v", tmp_path, fps_settings(), "v")
    column = encode_video(state, cells, tmp_path, ProblemLog(), FeatureCache(enabled=False))
    assert column.lengths.tolist() == [6, 12, 0] and column.present.tolist() == [True, True, False]
    assert not column.values[0, 6:].any() and column.values[0, :6].any()

    torch.manual_seed(0)
    encoder = VideoEncoder(state, ModelSettings(dim=16, layers=2, heads=2, dropout=0.0)).eval()
    values = torch.from_numpy(column.values).float()
    present = torch.from_numpy(column.present)
    lengths = torch.from_numpy(column.lengths)
    with torch.no_grad():
        tokens, mask = encoder(values, present, lengths)
        noisy = values.clone()
        noisy[0, 6:] = torch.randn_like(noisy[0, 6:])  # whatever pads the clip
        again, _ = encoder(noisy, present, lengths)
    assert mask[0].tolist() == [True] * 6 + [False] * 6
    assert mask[1].all() and not mask[2].any()
    assert torch.allclose(tokens[0, :6], again[0, :6], atol=1e-5)
    with torch.no_grad():  # without lengths (frames spread over each clip) all frames count
        assert encoder(values, present).mask[0].all()


def test_crop_length_is_fitted_from_the_clips_and_capped(tmp_path):
    """max_seconds None: the 95th percentile of the training clips' lengths, at most 20 s."""
    write_timed_mp4(tmp_path / "a.mp4", [100] * 15)  # 1.5 s
    write_timed_mp4(tmp_path / "b.mp4", [100] * 20)  # 2.0 s
    state = fit_video(["a.mp4", "b.mp4"], "v", tmp_path, fps_settings(max_seconds=None), "v")
    assert state.frames == round(4 * np.percentile([1.5, 2.0], 95))  # 8
    write_timed_mp4(tmp_path / "long.mp4", [100] * 25, rate=1)  # 25 s
    state = fit_video(["long.mp4"], "v", tmp_path, fps_settings(max_seconds=None), "v")
    assert state.frames == 4 * 20


def test_whole_clips_keep_the_longest_clip(tmp_path):
    """For a transcript (`whole`), the crop is the longest clip plus a tenth, not the 95th
    percentile, so the longest clip keeps all its frames."""
    write_timed_mp4(tmp_path / "a.mp4", [100] * 15)  # 1.5 s
    write_timed_mp4(tmp_path / "b.mp4", [100] * 20)  # 2.0 s
    settings = fps_settings(max_seconds=None)
    state = fit_video(["a.mp4", "b.mp4"], "v", tmp_path, settings, "v", whole=True)
    assert state.frames == round(4 * 2.0 * 1.1)  # 9; the 95th percentile gives 8
    column = encode_video(state, ["b.mp4"], tmp_path, ProblemLog(), FeatureCache(enabled=False))
    assert column.lengths.tolist() == [8], "all 2 s of the longest clip at 4 fps"


def test_frame_rate_is_part_of_the_cache_key(tmp_path):
    """Features decoded at one frame rate, or spread over the clip, are never reused for
    another; the key without `fps` is the one older versions wrote."""
    write_timed_mp4(tmp_path / "clip.mp4", [100] * 30)
    cache = FeatureCache(tmp_path / "cache")
    for settings in (fps_settings(), fps_settings(fps=2.0), VideoSettings(size=16, frames=12)):
        state = fit_video(["clip.mp4"], "v", tmp_path, settings, "v")
        encode_video(state, ["clip.mp4"], tmp_path, ProblemLog(), cache)
        encode_video(state, ["clip.mp4"], tmp_path, ProblemLog(), cache)
    assert (cache.misses, cache.hits) == (3, 3)
    keys = {path.name for path in (tmp_path / "cache").iterdir()}
    old = settings_key({"kind": "video", "frames": 12, "size": 16, "v": 1})
    assert len(keys) == 3 and old in keys


def test_video_state_keeps_its_frame_rate():
    state = VideoState(column="v", source="v", frames=12, size=16, fps=4.0)
    assert VideoState.model_validate(state.model_dump(mode="json")) == state
    older = {"kind": "video", "column": "v", "source": "v", "frames": 8, "size": 64}
    assert VideoState.model_validate(older).fps is None  # saved before `fps` existed


def test_a_saved_model_reads_clips_at_its_frame_rate(tmp_path):
    """Fitted at 4 fps with a 2 s crop, saved and loaded: the loaded model's state keeps the
    rate and crop, and it predicts what the fitted one did (clips of 1 to 3 s)."""
    rows = []
    for index in range(8):
        name = f"{index}.mp4"
        level = 60 if index % 2 else 180
        write_timed_mp4(tmp_path / name, [level] * (10 + 5 * (index % 5)))
        rows.append({"clip": name, "label": ("dark", "bright")[index % 2 == 0]})
    pd.DataFrame(rows).to_csv(tmp_path / "data.csv", index=False)
    config = tiny_config(max_epochs=1, batch_size=4)
    config.preprocess.video = VideoSettings(size=16, fps=4.0, max_seconds=2.0)
    model = Model(target="label", config=config, cache=FeatureCache(enabled=False))
    model.fit(tmp_path / "data.csv", out=tmp_path / "model")
    loaded = Model.load(tmp_path / "model", cache=FeatureCache(enabled=False))
    state = loaded.schema_.input("clip")
    assert (state.fps, state.frames) == (4.0, 8)
    features = loaded.encode(tmp_path / "data.csv")
    assert features["clip"]["lengths"].tolist() == [4, 6, 8, 8, 8, 4, 6, 8]
    pd.testing.assert_frame_equal(
        loaded.predict(tmp_path / "data.csv"), model.predict(tmp_path / "data.csv"), atol=1e-5
    )
