"""Video: a good clip, a file without video, and garbage."""

import numpy as np
import pytest

from polymodal.data.cache import FeatureCache
from polymodal.data.problems import DecodeError, ProblemLog
from polymodal.modalities.video.preprocess import decode_video, encode_video, fit_video
from tests.media import write_mp4, write_wav
from tests.modalities.logs import reasons


def test_video_good_no_frames_and_garbage(tmp_path):
    write_mp4(tmp_path / "good.mp4", brightness=40)
    (tmp_path / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(200))
    frames = decode_video((tmp_path / "good.mp4").read_bytes(), frames=4, size=16)
    assert frames.shape == (4, 3, 16, 16) and np.isfinite(frames).all()
    write_wav(tmp_path / "sound_only.wav")
    with pytest.raises(DecodeError, match="no video stream"):
        decode_video((tmp_path / "sound_only.wav").read_bytes(), 4, 16)
    from polymodal.config import VideoSettings

    cells = ["good.mp4", "garbage.mp4"]
    state = fit_video(cells, "v", tmp_path, VideoSettings(frames=4, size=16), "v")
    log = ProblemLog()
    column = encode_video(state, cells, tmp_path, log, FeatureCache(enabled=False))
    assert column.present.tolist() == [True, False] and 1 in reasons(log)
