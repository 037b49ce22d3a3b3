"""Audio: good, empty and undecodable files, resampling, and the sound track of a video."""

import numpy as np
import pytest

from polymodal.config import AudioSettings
from polymodal.data.cache import FeatureCache
from polymodal.data.problems import DecodeError, ProblemLog
from polymodal.modalities.audio.preprocess import decode_waveform, encode_audio, fit_audio, resample
from tests.media import write_mp4, write_tones, write_wav
from tests.modalities.logs import reasons


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


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_with_the_filter_designed_once_is_scipys_default(rate):
    from scipy.signal import resample_poly

    wave = np.random.default_rng(0).standard_normal(rate // 3).astype(np.float32)
    divisor = np.gcd(rate, 16000)
    expected = resample_poly(wave, 16000 // divisor, rate // divisor)
    for _ in range(2):  # the second call reuses the filter: scipy must not have changed it
        np.testing.assert_array_equal(resample(wave, rate, 16000), expected)


def test_wav_with_zero_samples_is_a_problem(tmp_path):
    import soundfile

    soundfile.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 8000)
    with pytest.raises(DecodeError, match="no samples"):
        decode_waveform((tmp_path / "zero.wav").read_bytes(), 16000)


def test_audio_track_of_a_video(tmp_path):
    write_mp4(tmp_path / "talk.mp4", with_audio=True)
    wave = decode_waveform((tmp_path / "talk.mp4").read_bytes(), 16000)
    assert 12000 < len(wave) < 20000 and np.abs(wave).max() > 0.1


def test_a_transcript_keeps_the_longest_clip_whole(tmp_path):
    """A label crops at the 95th percentile of the clips' lengths (the longest lose a tail);
    a transcript (`whole`) keeps even the longest clip whole: its last words are in the tail."""
    cells = []
    for count in range(1, 21):  # 0.4 s to 8 s
        write_tones(tmp_path / f"{count}.wav", [440.0] * count, seed=count)
        cells.append(f"{count}.wav")
    settings = AudioSettings(n_mels=16)
    cache = FeatureCache(enabled=False)
    longest = encode_audio(
        fit_audio(cells, "snd", tmp_path, settings.model_copy(update={"max_seconds": 9.0}), "snd"),
        cells[-1:], tmp_path, ProblemLog(), cache,
    ).lengths[0]  # fmt: skip
    cropped = fit_audio(cells, "snd", tmp_path, settings, "snd")
    whole = fit_audio(cells, "snd", tmp_path, settings, "snd", whole=True)
    assert cropped.frames < longest <= whole.frames <= 1.1 * longest + 1
    column = encode_audio(whole, cells[-1:], tmp_path, ProblemLog(), cache)
    assert column.lengths.tolist() == [longest]
