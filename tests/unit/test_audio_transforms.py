"""Unit tests for dltool.transforms.audio on real encoded audio written with soundfile."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from dltool.errors import RecordError
from dltool.transforms.audio import (
    decode_audio,
    feature_shape,
    fix_length,
    log_mel,
    mel_filterbank,
    mfcc,
    resample,
    to_channels,
)


def sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def stereo_clip(rate: int = 16000, seconds: float = 1.0) -> np.ndarray:
    return np.stack([sine(440, rate, seconds), sine(660, rate, seconds, amp=0.25)], axis=1)


def encode(wave: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def htk_centres(rate: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    mels = np.linspace(2595 * np.log10(1 + fmin / 700), 2595 * np.log10(1 + fmax / 700), n_mels + 2)
    return (700 * (10 ** (mels / 2595) - 1))[1:-1]


# --- decode_audio -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_decode_lossless_roundtrip(fmt):
    clip = stereo_clip()
    wave, rate = decode_audio(encode(clip, 16000, fmt, "PCM_16"))
    assert rate == 16000
    assert wave.dtype == np.float32
    assert wave.shape == (16000, 2)
    assert np.abs(wave - clip).max() < 1e-3


def test_decode_mono_is_2d():
    wave, rate = decode_audio(encode(sine(440, 22050, 0.5), 22050, "WAV", "PCM_16"))
    assert (wave.shape, rate) == ((11025, 1), 22050)


def test_decode_ogg_vorbis():
    clip = stereo_clip()
    wave, rate = decode_audio(encode(clip, 16000, "OGG", "VORBIS"))
    assert rate == 16000
    assert wave.shape == (16000, 2)
    # Lossy: judge by waveform similarity, not sample equality.
    assert correlation(wave[:, 0], clip[:, 0]) > 0.99
    assert correlation(wave[:, 1], clip[:, 1]) > 0.99


def test_decode_ogg_opus():
    clip = stereo_clip(rate=48000)
    wave, rate = decode_audio(encode(clip, 48000, "OGG", "OPUS"))
    assert rate == 48000
    assert wave.shape == (48000, 2)
    assert correlation(wave[:, 0], clip[:, 0]) > 0.99


def test_decode_mp3():
    clip = sine(440, 44100, 1.0)
    clip[:22050] = 0.0  # a silent first half makes any encoder delay visible as a shifted onset
    wave, rate = decode_audio(encode(clip, 44100, "MP3", "MPEG_LAYER_III"))
    assert rate == 44100
    # libsndfile writes a LAME/Xing header and trims encoder delay and padding on read.
    assert wave.shape == (44100, 1)
    onset = int(np.argmax(np.abs(wave[:, 0]) > 0.05))
    assert abs(onset - 22050) <= 2
    assert correlation(wave[:, 0], clip) > 0.99


def test_decode_empty_bytes():
    with pytest.raises(RecordError) as info:
        decode_audio(b"")
    assert info.value.stage == "read"
    assert str(info.value) == "empty file (0 bytes)"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(np.random.default_rng(7).bytes(4096), id="random-bytes"),
        pytest.param(encode(sine(440, 16000, 0.1), 16000, "WAV", "PCM_16")[:20], id="truncated-wav-header"),
        pytest.param(b"id,label\n1,cat\n2,dog\n", id="text-file"),
    ],
)
def test_decode_undecodable_bytes(data):
    with pytest.raises(RecordError) as info:
        decode_audio(data)
    assert info.value.stage == "decode"
    message = str(info.value)
    assert message.startswith("not a decodable audio file: ")
    assert "\n" not in message
    # soundfile's per-call object address is stripped so equal failures read the same.
    assert "0x" not in message


def test_decode_header_without_samples():
    header_only = encode(sine(440, 16000, 0.1), 16000, "WAV", "PCM_16")[:44]
    with pytest.raises(RecordError) as info:
        decode_audio(header_only)
    assert (info.value.stage, str(info.value)) == ("decode", "audio has no samples")


def test_a_long_file_is_refused_by_its_header_and_a_crop_decodes_only_its_start():
    import tracemalloc

    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", 48000, 2, format="FLAC", subtype="PCM_16") as f:
        for _ in range(60):  # 60 s of stereo silence: 23 MB once decoded
            f.write(np.zeros((48000, 2), np.float32))
    silence = buffer.getvalue()
    assert len(silence) < 64_000
    tracemalloc.start()
    try:
        with pytest.raises(RecordError, match=r"audio is 60 s long \(its header\), over max_seconds 30"):
            decode_audio(silence, max_seconds=30)
        wave, rate = decode_audio(silence, max_seconds=3600, keep_seconds=1.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rate == 48000 and wave.shape == (round(1.25 * 48000), 2)  # the kept second and a margin for resampling
    assert peak < 2 << 20  # never the whole file


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_decode_non_finite_samples(bad):
    clip = sine(440, 8000, 0.1)
    clip[100] = bad
    with pytest.raises(RecordError) as info:
        decode_audio(encode(clip, 8000, "WAV", "FLOAT"))
    assert (info.value.stage, str(info.value)) == ("decode", "audio contains NaN or infinite samples")


# --- to_channels ----------------------------------------------------------------------------


def test_stereo_to_mono_is_mean():
    clip = stereo_clip()
    mono = to_channels(clip, 1)
    assert mono.shape == (16000, 1)
    assert mono.dtype == np.float32
    np.testing.assert_allclose(mono[:, 0], (clip[:, 0] + clip[:, 1]) / 2, atol=1e-7)


def test_mono_repeats_to_two_channels():
    clip = sine(440, 16000, 0.25)[:, None]
    both = to_channels(clip, 2)
    assert both.shape == (4000, 2)
    np.testing.assert_array_equal(both[:, 0], clip[:, 0])
    np.testing.assert_array_equal(both[:, 1], clip[:, 0])


def test_matching_channels_kept():
    clip = stereo_clip()
    np.testing.assert_array_equal(to_channels(clip, 2), clip)


def test_six_channels_to_two_raises():
    clip = np.zeros((100, 6), dtype=np.float32)
    with pytest.raises(RecordError) as info:
        to_channels(clip, 2)
    assert info.value.stage == "transform"
    assert str(info.value) == "audio has 6 channels, expected 2 (or set channels: 1 to mix down)"


def test_six_channels_to_mono_mixes_down():
    clip = np.tile(np.arange(6, dtype=np.float32), (10, 1))
    np.testing.assert_allclose(to_channels(clip, 1), np.full((10, 1), 2.5, dtype=np.float32))


# --- resample -------------------------------------------------------------------------------


def test_resample_same_rate_is_identity():
    clip = stereo_clip()
    assert resample(clip, 16000, 16000) is clip


def test_resample_sine_length_and_pitch():
    n = 44100
    out = resample(sine(440, 44100, 1.0)[:, None], 44100, 16000)
    assert out.dtype == np.float32
    assert out.ndim == 2 and out.shape[1] == 1
    assert abs(out.shape[0] - round(n * 16000 / 44100)) <= 1
    spectrum = np.abs(np.fft.rfft(out[:, 0]))
    freqs = np.fft.rfftfreq(out.shape[0], 1 / 16000)
    assert abs(freqs[np.argmax(spectrum)] - 440) <= 16000 / out.shape[0]


def test_resample_keeps_stereo_layout():
    out = resample(stereo_clip(rate=44100), 44100, 22050)
    assert out.shape == (22050, 2)
    assert out.flags["C_CONTIGUOUS"]


def test_resample_keeps_passband_tone():
    tone = sine(7000, 44100, 1.0)[:, None]
    out = resample(tone, 44100, 16000)
    middle = out[1000:-1000]  # skip filter edge transients
    assert rms(middle) == pytest.approx(rms(tone), rel=0.05)


def test_resample_removes_tone_above_new_nyquist():
    tone = sine(10000, 44100, 1.0)[:, None]
    out = resample(tone, 44100, 16000)
    attenuation_db = 20 * np.log10(rms(out[1000:-1000]) / rms(tone))
    assert attenuation_db < -40
    # Nearest-sample decimation would alias the 10 kHz tone to 6 kHz at nearly full level.
    naive = tone[np.round(np.arange(out.shape[0]) * 44100 / 16000).astype(int).clip(max=len(tone) - 1)]
    assert 20 * np.log10(rms(naive) / rms(tone)) > -3


def test_resample_too_short_raises():
    with pytest.raises(RecordError) as info:
        resample(np.ones((1, 1), dtype=np.float32), 44100, 16000)
    assert info.value.stage == "transform"


# --- fix_length -----------------------------------------------------------------------------


def ramp(frames: int, channels: int = 1) -> np.ndarray:
    # Distinct non-zero values make it obvious where each window came from.
    return np.tile(np.arange(1, frames + 1, dtype=np.float32)[:, None], (1, channels))


def test_crop_keeps_start():
    (out,) = fix_length(ramp(2500, 2), 1000, "crop", None)
    assert out.shape == (1000, 2)
    np.testing.assert_array_equal(out, ramp(1000, 2))


def test_crop_pads_short_clip_with_zeros():
    (out,) = fix_length(ramp(300), 1000, "crop", None)
    assert out.shape == (1000, 1)
    np.testing.assert_array_equal(out[:300, 0], np.arange(1, 301))
    assert not out[300:].any()


def test_chunk_keeps_half_full_tail():
    windows = fix_length(ramp(2500), 1000, "chunk", 1000)  # 2.5 s at 1 kHz, 1 s windows
    assert len(windows) == 3
    assert all(w.shape == (1000, 1) and w.dtype == np.float32 for w in windows)
    np.testing.assert_array_equal(windows[1][:, 0], np.arange(1001, 2001))
    np.testing.assert_array_equal(windows[2][:500, 0], np.arange(2001, 2501))
    assert not windows[2][500:].any()


def test_chunk_drops_short_tail():
    assert len(fix_length(ramp(2300), 1000, "chunk", None)) == 2


def test_chunk_exact_multiple_has_no_padding_window():
    windows = fix_length(ramp(3000), 1000, "chunk", None)
    assert len(windows) == 3
    assert all(w.all() for w in windows)


def test_chunk_short_clip_gives_one_padded_window():
    (out,) = fix_length(ramp(200), 1000, "chunk", 500)
    np.testing.assert_array_equal(out[:200, 0], np.arange(1, 201))
    assert not out[200:].any()


def test_chunk_overlapping_hop():
    windows = fix_length(ramp(11), 4, "chunk", 2)
    # Full windows start at 0, 2, 4, 6; the tail at 8 holds 3 of 4 real samples.
    assert [w[0, 0] for w in windows] == [1, 3, 5, 7, 9]
    np.testing.assert_array_equal(windows[-1][:, 0], [9, 10, 11, 0])


def test_chunk_overlapping_hop_without_uncovered_tail():
    # The window at 8 would hold only already-covered samples 9..10 plus padding.
    assert len(fix_length(ramp(10), 4, "chunk", 2)) == 4


def test_fix_length_rejects_unknown_mode():
    with pytest.raises(ValueError):
        fix_length(ramp(10), 4, "stretch", None)


# --- mel features ---------------------------------------------------------------------------


def test_mel_filterbank_shape_and_peaks():
    rate, n_fft, n_mels = 16000, 512, 40
    fb = mel_filterbank(rate, n_fft, n_mels, 0.0, None)
    assert fb.shape == (n_mels, n_fft // 2 + 1)
    assert fb.dtype == np.float32
    assert (fb >= 0).all()
    assert fb.max() <= 1.0 + 1e-6
    assert (fb.sum(axis=1) > 0).all()
    bin_hz = rate / n_fft
    peaks_hz = np.argmax(fb, axis=1) * bin_hz
    centres = htk_centres(rate, n_mels, 0.0, rate / 2)
    # Triangles are asymmetric, so the largest sampled value can sit one bin off the centre.
    assert np.abs(peaks_hz - centres).max() <= bin_hz
    assert (np.diff(np.argmax(fb, axis=1)) > 0).all()


def test_mel_filterbank_triangles_peak_at_one():
    # With fine bins every triangle is sampled close to its apex, which is 1 (no area norm).
    fb = mel_filterbank(16000, 16384, 40, 0.0, None)
    assert fb.max(axis=1) == pytest.approx(np.ones(40), abs=0.05)


def test_mel_filterbank_respects_fmin_fmax():
    rate, n_fft = 16000, 1024
    fb = mel_filterbank(rate, n_fft, 32, 300.0, 4000.0)
    freqs = np.arange(n_fft // 2 + 1) * rate / n_fft
    assert not fb[:, freqs <= 300].any()
    assert not fb[:, freqs >= 4000].any()


def test_log_mel_sine_peaks_in_nearest_band():
    rate, n_mels = 16000, 40
    spec = log_mel(sine(1000, rate, 1.0)[:, None], rate, 512, 160, n_mels, 0.0, None)
    centres = htk_centres(rate, n_mels, 0.0, rate / 2)
    band = int(np.argmax(spec[:, :, 0].mean(axis=0)))
    assert band == int(np.argmin(np.abs(centres - 1000)))


def test_log_mel_matches_direct_computation():
    rate, n_fft, hop, n_mels = 8000, 256, 100, 20
    clip = stereo_clip(rate=rate, seconds=0.25)
    spec = log_mel(clip, rate, n_fft, hop, n_mels, 50.0, 3500.0)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    fb = mel_filterbank(rate, n_fft, n_mels, 50.0, 3500.0).astype(np.float64)
    for frame in (0, 5, spec.shape[0] - 1):
        for ch in (0, 1):
            seg = clip[frame * hop : frame * hop + n_fft, ch].astype(np.float64)
            expected = np.log(fb @ np.abs(np.fft.rfft(seg * window)) ** 2 + 1e-6)
            np.testing.assert_allclose(spec[frame, :, ch], expected, rtol=1e-4, atol=1e-4)


def test_log_mel_of_silence_is_floor():
    spec = log_mel(np.zeros((1000, 1), dtype=np.float32), 16000, 400, 160, 16, 0.0, None)
    np.testing.assert_allclose(spec, np.log(1e-6), rtol=1e-6)


def test_log_mel_valid_framing_drops_tail():
    # 1 + (1000 - 400) // 160 = 4 frames; the 40 samples after the last frame are unused.
    assert log_mel(np.zeros((1000, 1), np.float32), 16000, 400, 160, 16, 0.0, None).shape == (4, 16, 1)


def test_log_mel_shorter_than_fft_raises():
    with pytest.raises(RecordError) as info:
        log_mel(np.zeros((100, 1), np.float32), 16000, 400, 160, 16, 0.0, None)
    assert info.value.stage == "transform"


def test_mfcc_shape_and_first_coefficient():
    rate, n_fft, hop, n_mels, n_mfcc = 16000, 400, 160, 40, 13
    clip = stereo_clip(rate=rate, seconds=0.5)
    coeffs = mfcc(clip, rate, n_fft, hop, n_mels, n_mfcc, 0.0, None)
    assert coeffs.shape == (1 + (8000 - n_fft) // hop, n_mfcc, 2)
    assert coeffs.dtype == np.float32
    # Orthonormal DCT-II: c0 = sum(log-mel) / sqrt(n_mels).
    logmel = log_mel(clip, rate, n_fft, hop, n_mels, 0.0, None)
    np.testing.assert_allclose(coeffs[:, 0, :], logmel.sum(axis=1) / np.sqrt(n_mels), rtol=1e-4)


@pytest.mark.parametrize("features", ["waveform", "logmel", "mfcc"])
@pytest.mark.parametrize("channels", [1, 2])
def test_feature_shape_matches_real_output(features, channels):
    rate, length, n_fft, hop, n_mels, n_mfcc = 16000, 16000, 512, 160, 64, 20
    decoded, file_rate = decode_audio(encode(stereo_clip(rate=44100, seconds=1.3), 44100, "FLAC", "PCM_16"))
    wave = resample(to_channels(decoded, channels), file_rate, rate)
    (example,) = fix_length(wave, length, "crop", None)
    if features == "logmel":
        example = log_mel(example, rate, n_fft, hop, n_mels, 0.0, None)
    elif features == "mfcc":
        example = mfcc(example, rate, n_fft, hop, n_mels, n_mfcc, 0.0, None)
    assert example.shape == feature_shape(features, length, channels, n_fft, hop, n_mels, n_mfcc)


def test_feature_shape_rejects_bad_values():
    with pytest.raises(ValueError):
        feature_shape("spectrogram", 16000, 1, 512, 160, 64, 20)
    with pytest.raises(ValueError):
        feature_shape("logmel", 256, 1, 512, 160, 64, 20)
