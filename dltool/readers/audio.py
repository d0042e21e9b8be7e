"""The `audio` reader: WAV, FLAC, OGG, MP3 and Opus clips to fixed-length waveforms or spectrograms."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from dltool.config.base import FileInput
from dltool.readers.base import FileReader, register
from dltool.shards.codec import TensorSpec

AUDIO_EXTENSIONS = ["*.wav", "*.flac", "*.ogg", "*.mp3", "*.opus"]


class AudioReaderConfig(FileInput):
    """Audio (WAV, FLAC, OGG, MP3, Opus) decoded with soundfile and resampled with soxr."""

    reader: Literal["audio"] = Field(description="Selects this reader.")
    include: list[str] = Field(default_factory=lambda: list(AUDIO_EXTENSIONS), description="Glob patterns of files to read.")
    sample_rate: int = Field(16000, ge=1000, le=192000, description="Every clip is resampled (soxr, HQ) to this rate.")
    channels: int = Field(1, ge=1, le=8, description="1 mixes down to mono; N keeps N channels (mono is repeated).")
    duration: float = Field(description="Seconds per example; shorter clips are zero-padded.", gt=0, le=600)
    long_clips: Literal["crop", "chunk"] = Field("crop", description="crop keeps the start; chunk makes windows.")
    max_seconds: float = Field(
        3600, gt=0, description="A file longer than this (by its header, read before any sample is decoded) is "
        "quarantined: it bounds the memory one file takes. With long_clips: crop only the kept start is decoded.",
    )
    chunk_hop: float | None = Field(None, gt=0, description="Seconds between chunk starts (default: duration).")
    features: Literal["waveform", "logmel", "mfcc"] = Field(
        "waveform", description="Store the waveform, or a log-mel spectrogram / MFCCs computed at ingest."
    )
    n_fft: int = Field(512, ge=16, le=16384, description="FFT window length in samples (spectrograms).")
    hop_length: int = Field(160, ge=1, description="Samples between spectrogram frames.")
    n_mels: int = Field(40, ge=1, le=512, description="Mel bands.")
    n_mfcc: int = Field(13, ge=1, le=128, description="MFCC coefficients kept (features: mfcc).")
    fmin: float = Field(0.0, ge=0, description="Lowest mel band edge in Hz.")
    fmax: float | None = Field(None, gt=0, description="Highest mel band edge in Hz (default: Nyquist).")

    @model_validator(mode="after")
    def _spectrogram_fits(self):
        if self.features != "waveform" and self.n_fft > round(self.duration * self.sample_rate):
            raise ValueError("n_fft is longer than one example (duration * sample_rate)")
        if self.features == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError("n_mfcc must not exceed n_mels")
        if self.fmax is not None and self.fmax > self.sample_rate / 2:
            raise ValueError(f"fmax must not exceed the Nyquist frequency {self.sample_rate / 2:g}")
        return self


@register
class AudioReader(FileReader):
    name = "audio"
    task_modules = (*FileReader.task_modules, "dltool.transforms.audio", "soundfile")
    config_model = AudioReaderConfig
    default_model = "audio_cnn"

    def setup(self) -> None:
        from dltool.errors import EnvironmentProblem

        try:  # soundfile loads libsndfile as it is imported: a missing one is the executor's problem, not the files'
            import soundfile  # noqa: F401
            import soxr  # noqa: F401
        except (ImportError, OSError) as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise EnvironmentProblem(f"the audio reader cannot run on this executor ({type(e).__name__}: {first}); "
                                     "install libsndfile (soundfile) and soxr") from e  # fmt: skip

    @property
    def length(self) -> int:
        return round(self.config.duration * self.config.sample_rate)

    @property
    def hop(self) -> int | None:
        hop = self.config.chunk_hop
        return None if hop is None else max(1, round(hop * self.config.sample_rate))

    def tensor_spec(self) -> TensorSpec:
        from dltool.transforms.audio import feature_shape

        cfg = self.config
        shape = feature_shape(
            cfg.features, self.length, cfg.channels, cfg.n_fft, cfg.hop_length, cfg.n_mels, cfg.n_mfcc
        )
        return TensorSpec(tuple(shape), "float32")

    def stats_axis(self) -> int:
        # Spectrograms are (frames, bins, channels): normalise per bin; waveforms per channel.
        return -1 if self.config.features == "waveform" else 1

    def decode(self, data: bytes, relpath: str) -> list[tuple[str, np.ndarray]]:
        from dltool.transforms import audio

        cfg = self.config
        keep = cfg.duration if cfg.long_clips == "crop" else None
        wave, rate = audio.decode_audio(data, max_seconds=cfg.max_seconds, keep_seconds=keep)
        wave = audio.resample(audio.to_channels(wave, cfg.channels), rate, cfg.sample_rate)
        windows = audio.fix_length(wave, self.length, cfg.long_clips, self.hop)
        spectral = dict(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
            n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax,
        )  # fmt: skip
        examples = []
        for index, window in enumerate(windows):
            if cfg.features == "logmel":
                window = audio.log_mel(window, **spectral)
            elif cfg.features == "mfcc":
                window = audio.mfcc(window, n_mfcc=cfg.n_mfcc, **spectral)
            suffix = f"#{index}" if cfg.long_clips == "chunk" else ""
            examples.append((suffix, np.ascontiguousarray(window, dtype=np.float32)))
        return examples
