"""Every decoder on good and bad input; bad input is masked and reported, or raises if strict."""

import numpy as np
import pytest

from polymodal.config import AudioSettings, ImageSettings, TextSettings
from polymodal.data.audio import decode_waveform, encode_audio, fit_audio
from polymodal.data.cache import FeatureCache
from polymodal.data.image import encode_images, fit_image
from polymodal.data.problems import BadInputError, DecodeError, ProblemLog
from polymodal.data.tabular import encode_categories, encode_numbers, fit_category, fit_number
from polymodal.data.text import encode_text, fit_text
from polymodal.data.video import decode_video, encode_video, fit_video
from tests.media import write_mp4, write_png, write_wav


def reasons(log: ProblemLog) -> dict[int, str]:
    return {problem.row: problem.reason for problem in log.problems}


def test_images_good_corrupt_truncated_missing(tmp_path):
    write_png(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    cells = ["good.png", "corrupt.png", "truncated.png", "missing.png", None]
    state = fit_image(cells, "img", tmp_path, ImageSettings(), "img")
    assert state.size == 32 and state.channels == 3
    log = ProblemLog()
    column = encode_images(state, cells, tmp_path, log, FeatureCache(enabled=False))
    assert column.values.shape == (5, 3, 32, 32)
    assert column.present.tolist() == [True, False, False, False, False]
    found = reasons(log)
    assert set(found) == {1, 2, 3}, "an empty cell is missing, not a problem"
    assert "not a readable image" in found[1] and found[3] == "file not found"
    assert np.all(column.values[1:] == 0)


def test_grey_images_stay_grey(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "g.png")
    state = fit_image(["g.png"], "g", tmp_path, ImageSettings(), "g")
    assert state.channels == 1 and state.size == 20, "kept at its own side, not rounded up"


def test_audio_good_empty_undecodable_and_resampled(tmp_path):
    write_wav(tmp_path / "good.wav", rate=8000)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "noise.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage" * 3)
    write_wav(tmp_path / "silent_header.wav")
    settings = AudioSettings(n_mels=16)
    wave = decode_waveform((tmp_path / "good.wav").read_bytes(), 16000)
    assert abs(len(wave) - 8000) <= 2, "0.5 s at 8 kHz becomes 0.5 s at 16 kHz"
    cells = ["good.wav", "empty.wav", "noise.wav"]
    state = fit_audio(cells, "snd", tmp_path, settings, "snd")
    log = ProblemLog()
    column = encode_audio(state, cells, tmp_path, log, FeatureCache(enabled=False))
    assert column.values.shape == (3, 16, state.frames)
    assert column.present.tolist() == [True, False, False]
    assert column.lengths[0] > 0 and column.lengths[1] == 0
    found = reasons(log)
    assert found[1] == "file is empty" and "audio" in found[2]


def test_wav_with_zero_samples_is_a_problem(tmp_path):
    import soundfile

    soundfile.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 8000)
    with pytest.raises(DecodeError, match="no samples"):
        decode_waveform((tmp_path / "zero.wav").read_bytes(), 16000)


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


def test_audio_track_of_a_video(tmp_path):
    write_mp4(tmp_path / "talk.mp4", with_audio=True)
    wave = decode_waveform((tmp_path / "talk.mp4").read_bytes(), 16000)
    assert 12000 < len(wave) < 20000 and np.abs(wave).max() > 0.1


def test_text_tokenizer_and_non_utf8(tmp_path):
    cells = ["the cat sat", "a dog ran far away", "bad \ufffd bytes", None, b"\xff\xfe raw"]
    state = fit_text(cells, "t", TextSettings(vocab_size=60), "t")
    log = ProblemLog()
    column = encode_text(state, cells, log)
    assert column.present.tolist() == [True, True, False, False, False]
    assert column.lengths[1] > column.lengths[0] > 0
    assert set(reasons(log)) == {2, 4} and "UTF-8" in reasons(log)[2]


def test_numbers_text_nan_and_scaling():
    cells = [1.0, 3.0, "oops", None, float("nan"), "5"]
    state = fit_number(cells, "n", "n")
    assert state.mean == pytest.approx(3.0)
    log = ProblemLog()
    column = encode_numbers(state, cells, log)
    assert column.present.tolist() == [True, True, False, False, False, True]
    assert column.values[1, 0] == pytest.approx(0.0) and column.values[5, 0] > 0
    assert list(reasons(log)) == [2]


def test_unknown_category_uses_the_unknown_bucket_and_is_reported():
    state = fit_category(["a", "b", "a"], "c", "c")
    log = ProblemLog()
    column = encode_categories(state, ["a", "z", None], log)
    assert column.values.tolist() == [2, 1, 0]
    assert column.present.tolist() == [True, True, False]
    assert "unknown category 'z'" in reasons(log)[1]


def test_strict_stops_at_the_first_problem(tmp_path):
    with pytest.raises(BadInputError, match="row 1, column 'n'.*not a number"):
        encode_numbers(fit_number([1.0], "n", "n"), [1.0, "x", "y"], ProblemLog(strict=True))


def test_feature_cache_is_keyed_by_content_and_settings(tmp_path):
    write_png(tmp_path / "a.png", seed=1)
    state = fit_image(["a.png"], "i", tmp_path, ImageSettings(), "i")
    cache = FeatureCache(tmp_path / "cache")
    encode_images(state, ["a.png"], tmp_path, ProblemLog(), cache)
    assert (cache.hits, cache.misses) == (0, 1)
    (tmp_path / "copy.png").write_bytes((tmp_path / "a.png").read_bytes())
    encode_images(state, ["copy.png"], tmp_path, ProblemLog(), cache)
    assert cache.hits == 1, "same bytes under another name is a hit"
    bigger = state.model_copy(update={"size": 48})
    encode_images(bigger, ["a.png"], tmp_path, ProblemLog(), cache)
    assert cache.misses == 2, "other settings never reuse old features"
    write_png(tmp_path / "a.png", seed=2)
    encode_images(state, ["a.png"], tmp_path, ProblemLog(), cache)
    assert cache.misses == 3, "an edited file is never a stale hit"
