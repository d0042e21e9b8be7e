"""The `audio` reader: WAV, FLAC, OGG, MP3 and Opus clips to fixed-length waveforms or spectrograms."""

from __future__ import annotations

import numpy as np

from dltool.config.readers import AUDIO_EXTENSIONS, AudioReaderConfig  # noqa: F401  (re-exported)
from dltool.readers.base import FileReader, register
from dltool.shards.codec import TensorSpec

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
