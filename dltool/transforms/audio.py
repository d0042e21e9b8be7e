"""Audio transforms: decode bytes, fix channels, rate and length, compute log-mel/MFCC features."""

from __future__ import annotations

import io
import re

import numpy as np

from dltool.errors import RecordError

__all__ = [
    "decode_audio",
    "feature_shape",
    "fix_length",
    "log_mel",
    "mel_filterbank",
    "mfcc",
    "resample",
    "to_channels",
]

FEATURES = ("waveform", "logmel", "mfcc")
LOG_FLOOR = 1e-6

# soundfile prefixes errors with "Error opening <_io.BytesIO object at 0x7f...>: ", whose
# address differs per call; dropping it keeps quarantine messages stable and groupable.
_OPEN_PREFIX = re.compile(r"^Error opening <[^>]*>:\s*")


MAX_CHANNELS = 64
_CROP_MARGIN_S = 0.25  # decoded past the kept seconds, so resampling sees the same samples at the crop's edge


def decode_audio(data: bytes, max_seconds: float | None = None, keep_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode an audio file's bytes (WAV, FLAC, OGG/Vorbis, Opus, MP3...) with libsndfile.

    Returns float32 samples shaped (frames, channels), always 2-D, and the file's sample rate.
    The header is read first: a file longer than `max_seconds` is refused before any sample is
    decoded (10 KB of FLAC can stand for hours of silence), and with `keep_seconds` only the
    start that a crop keeps is decoded.
    """
    import soundfile

    if len(data) == 0:
        raise RecordError("read", "empty file (0 bytes)")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            rate, declared = int(f.samplerate), int(f.frames)
            _check_header(declared, rate, f.channels, max_seconds)
            limit = declared if declared > 0 else -1  # -1: to the end (a header without a length)
            if limit < 0 and max_seconds is not None:
                limit = round(max_seconds * rate) + 1  # one frame more than allowed tells an over-long file
            if keep_seconds is not None:
                kept = round((keep_seconds + _CROP_MARGIN_S) * rate)
                limit = kept if limit < 0 else min(limit, kept)
            wave = f.read(frames=limit, dtype="float32", always_2d=True)
    except RecordError:
        raise
    except Exception as exc:  # libsndfile reports every bad input differently; all are per-record
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        reason = _OPEN_PREFIX.sub("", lines[0]) or type(exc).__name__
        raise RecordError("decode", f"not a decodable audio file: {reason}") from exc
    if wave.shape[0] == 0:
        raise RecordError("decode", "audio has no samples")
    if max_seconds is not None and keep_seconds is None and wave.shape[0] > max_seconds * rate:
        raise RecordError("decode", f"audio is longer than max_seconds {max_seconds:g} (its header gave no length)")
    # Float WAV/AIFF can carry NaN/inf; they would poison every feature downstream.
    if not np.isfinite(wave).all():
        raise RecordError("decode", "audio contains NaN or infinite samples")
    return wave, int(rate)


def _check_header(frames: int, rate: int, channels: int, max_seconds: float | None) -> None:
    if rate <= 0:
        raise RecordError("decode", f"audio header gives a sample rate of {rate}")
    if channels > MAX_CHANNELS:
        raise RecordError("decode", f"audio has {channels} channels (at most {MAX_CHANNELS} are read)")
    if max_seconds is not None and frames > max_seconds * rate:
        raise RecordError("decode", f"audio is {frames / rate:,.0f} s long (its header), over max_seconds "
                                    f"{max_seconds:g}; raise ingest.max_seconds to read it")  # fmt: skip


def to_channels(wave: np.ndarray, channels: int) -> np.ndarray:
    """Make (frames, c) audio have `channels` channels.

    channels=1 mixes down by averaging; otherwise a file with that many channels is kept,
    a mono file is repeated, and any other layout is a RecordError (no guessing of downmixes).
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    have = wave.shape[1]
    if channels == 1:
        if have == 1:
            return wave.astype(np.float32, copy=False)
        return wave.mean(axis=1, keepdims=True, dtype=np.float32)
    if have == channels:
        return wave.astype(np.float32, copy=False)
    if have == 1:
        return np.repeat(wave.astype(np.float32, copy=False), channels, axis=1)
    raise RecordError(
        "transform",
        f"audio has {have} channels, expected {channels} (or set channels: 1 to mix down)",
    )


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample (frames, channels) float32 audio with soxr (HQ); returns `wave` itself if rates match."""
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
    if rate_in == rate_out:
        return wave
    import soxr

    # soxr wants C-ordered input and may hand back a non-contiguous view otherwise.
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    out = soxr.resample(wave, rate_in, rate_out, quality="HQ")
    if out.shape[0] == 0:
        raise RecordError(
            "transform",
            f"audio of {wave.shape[0]} frames is too short to resample {rate_in} -> {rate_out} Hz",
        )
    return np.ascontiguousarray(out, dtype=np.float32)


def _pad_to(wave: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros((length, wave.shape[1]), dtype=np.float32)
    out[: wave.shape[0]] = wave[:length]
    return out


def fix_length(wave: np.ndarray, length: int, mode: str, hop: int | None) -> list[np.ndarray]:
    """Cut (frames, channels) audio into examples of exactly `length` frames.

    "crop": one example, the start of the clip, zero-padded at the end if short.
    "chunk": windows starting every `hop` frames (default `length`); a trailing partial window
    is kept, zero-padded, only if it holds at least half a window of real samples and reaches
    samples no full window covered; a clip shorter than `length` gives one padded window.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    n = wave.shape[0]
    if mode == "crop":
        return [_pad_to(wave, length)]
    if mode != "chunk":
        raise ValueError(f"mode must be 'crop' or 'chunk', got {mode!r}")
    hop = length if hop is None else hop
    if hop < 1:
        raise ValueError(f"hop must be >= 1, got {hop}")
    if n <= length:
        return [_pad_to(wave, length)]
    full = 1 + (n - length) // hop
    windows = [np.array(wave[i * hop : i * hop + length], dtype=np.float32) for i in range(full)]
    tail_start = full * hop
    last_full_end = (full - 1) * hop + length
    # A tail under half a window would be an example that is mostly padded silence.
    if last_full_end < n and 2 * (n - tail_start) >= length:
        windows.append(_pad_to(wave[tail_start:], length))
    return windows


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular HTK-mel filters, shape (n_mels, n_fft // 2 + 1), float32.

    Centres are evenly spaced on the HTK mel scale (2595 * log10(1 + f / 700)) between fmin and
    fmax (default Nyquist). Each filter is a plain triangle whose apex is 1 at its centre
    frequency (no Slaney area normalisation), evaluated at the FFT bin frequencies, so the
    sampled peak is <= 1 and a filter narrower than a bin may be all zero.
    """
    nyquist = sample_rate / 2.0
    fmax = nyquist if fmax is None else float(fmax)
    if n_fft < 2 or n_mels < 1:
        raise ValueError(f"need n_fft >= 2 and n_mels >= 1, got n_fft={n_fft}, n_mels={n_mels}")
    if not 0.0 <= fmin < fmax <= nyquist:
        raise ValueError(f"need 0 <= fmin < fmax <= {nyquist:g} Hz, got fmin={fmin:g}, fmax={fmax:g}")
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    bins = np.linspace(0.0, nyquist, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel(
    wave: np.ndarray,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """Log-mel spectrogram of (n, channels) audio, float32 shaped (frames, n_mels, channels).

    Framing is "valid": no centre padding, frames = 1 + (n - n_fft) // hop_length, and samples
    after the last whole frame are dropped. Periodic Hann window, power |rfft|^2, the
    `mel_filterbank` triangles, then log(mel + 1e-6).
    """
    import scipy.fft
    import scipy.signal

    n = wave.shape[0]
    if hop_length < 1:
        raise ValueError(f"hop_length must be >= 1, got {hop_length}")
    if n < n_fft:
        raise RecordError("transform", f"audio has {n} frames, fewer than n_fft={n_fft}")
    window = scipy.signal.get_window("hann", n_fft).astype(np.float32)
    # A strided (frames, channels, n_fft) view: frames are only copied once, when windowed.
    frames = np.lib.stride_tricks.sliding_window_view(
        np.asarray(wave, dtype=np.float32), n_fft, axis=0
    )[::hop_length]
    spectrum = scipy.fft.rfft(frames * window, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = power @ mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax).T
    return np.log(mel + LOG_FLOOR).transpose(0, 2, 1).astype(np.float32)


def mfcc(
    wave: np.ndarray,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    n_mfcc: int,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """MFCCs: orthonormal DCT-II of `log_mel` over the mel axis, first n_mfcc kept.

    Shape (frames, n_mfcc, channels), float32.
    """
    import scipy.fft

    if not 1 <= n_mfcc <= n_mels:
        raise ValueError(f"need 1 <= n_mfcc <= n_mels ({n_mels}), got {n_mfcc}")
    logmel = log_mel(wave, sample_rate, n_fft, hop_length, n_mels, fmin, fmax)
    coeffs = scipy.fft.dct(logmel, type=2, norm="ortho", axis=1)[:, :n_mfcc, :]
    return np.ascontiguousarray(coeffs, dtype=np.float32)


def feature_shape(
    features: str,
    length: int,
    channels: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    n_mfcc: int,
) -> tuple[int, ...]:
    """Shape of one example of `length` frames after `features` ("waveform", "logmel" or "mfcc")."""
    if features == "waveform":
        return (length, channels)
    if features not in FEATURES:
        raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")
    if length < n_fft:
        raise ValueError(f"length ({length} samples) must be at least n_fft ({n_fft})")
    if hop_length < 1:
        raise ValueError(f"hop_length must be >= 1, got {hop_length}")
    frames = 1 + (length - n_fft) // hop_length
    return (frames, n_mels if features == "logmel" else n_mfcc, channels)
