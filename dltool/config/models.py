"""Pydantic models of the experiment YAML: one class per section, validated once."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IMAGE_EXTENSIONS = ["*.jpg", "*.jpeg", "*.png", "*.bmp", "*.tif", "*.tiff", "*.webp"]
AUDIO_EXTENSIONS = ["*.wav", "*.flac", "*.ogg", "*.mp3", "*.opus"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SparkSettings(Section):
    """Where Spark runs. Under spark-submit the active session is reused and these are ignored."""

    master: str = Field("local[*]", description="Spark master URL: local[*], local[2], spark://host:7077, yarn, k8s://...")
    app_name: str = Field("dltool", description="Spark application name.")
    conf: dict[str, Union[str, int, float, bool]] = Field(
        default_factory=dict, description="Extra Spark settings, e.g. spark.driver.memory: 2g."
    )


class SplitSettings(Section):
    """Fractions of records per split, assigned by a stable hash of the record key."""

    train: float = Field(0.8, ge=0, le=1, description="Fraction of records in the train split.")
    val: float = Field(0.1, ge=0, le=1, description="Fraction of records in the validation split.")
    test: float = Field(0.1, ge=0, le=1, description="Fraction of records in the test split.")
    salt: str = Field("", description="Changes the hash, and so which records land in which split.")

    @model_validator(mode="after")
    def _fractions_sum_to_one(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1.0, got {total:g}")
        return self


class DatasetSettings(Section):
    """The dataset that ingest writes and train/eval read."""

    path: str = Field(description="Dataset location: a local path, file://, hdfs:// or s3:// URI.")
    split: SplitSettings = SplitSettings()
    shard_mb: int = Field(128, ge=1, le=4096, description="Target size of one Parquet shard file.")
    row_group_mb: int = Field(32, ge=1, le=1024, description="Target size of one Parquet row group.")
    compression: Literal["zstd", "snappy", "gzip", "none"] = Field("zstd", description="Parquet compression codec.")
    max_bad_fraction: float = Field(
        0.05, ge=0, le=1, description="Fail (exit 3) when more than this fraction of inputs is quarantined."
    )

    @model_validator(mode="after")
    def _row_group_fits_shard(self):
        if self.row_group_mb > self.shard_mb:
            raise ValueError(f"row_group_mb ({self.row_group_mb}) must not exceed shard_mb ({self.shard_mb})")
        return self


class LabelFromParentDir(Section):
    """The label is the name of the file's parent directory (class folders)."""

    source: Literal["parent_dir"] = "parent_dir"


class LabelFromRegex(Section):
    """The label is the first group of a regex searched in the path relative to the input root."""

    source: Literal["regex"]
    pattern: str = Field(description="Regex searched in the relative path; its first group is the label.")

    @field_validator("pattern")
    @classmethod
    def _compiles_with_group(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as e:
            raise ValueError(f"not a valid regex: {e}") from e
        if compiled.groups < 1:
            raise ValueError("the regex needs one capturing group, e.g. '^(\\w+)_\\d+'")
        return value


class NoLabel(Section):
    """Records have no label (unsupervised data, or inference inputs)."""

    source: Literal["none"]


FileLabel = Annotated[Union[LabelFromParentDir, LabelFromRegex, NoLabel], Field(discriminator="source")]


class FileInput(Section):
    input: str = Field(description="Directory (searched recursively) or single file; local path or URI.")
    include: list[str] = Field(description="Glob patterns matched against the path relative to input (case-insensitive).")
    exclude: list[str] = Field(default_factory=list, description="Glob patterns of files to leave out.")
    label: FileLabel = LabelFromParentDir()
    max_file_mb: float = Field(64, gt=0, description="Files larger than this are quarantined unread.")
    files_per_task: int = Field(
        0, ge=0, description="At most this many files per Spark task (and shard); 0 sizes tasks from shard_mb and the cores."
    )


class Augment(Section):
    """Ingest-time augmentation: `copies` extra randomised copies of each train image."""

    copies: int = Field(0, ge=0, le=32, description="Extra augmented copies of each train example (0: off).")
    flip: bool = Field(False, description="Random horizontal flip.")
    rotate: float = Field(0, ge=0, le=180, description="Random rotation within +/- this many degrees.")
    crop: float = Field(0, ge=0, lt=1, description="Random crop removing up to this fraction of each side, then resize.")
    brightness: float = Field(0, ge=0, le=1, description="Random brightness shift within +/- this fraction of 255.")
    seed: int = Field(0, description="Seed mixed with each record key, so reruns write the same pixels.")


class ImageReaderConfig(FileInput):
    """Images (JPEG, PNG, BMP, TIFF, WebP) decoded with OpenCV."""

    reader: Literal["image"] = Field(description="Selects this reader.")
    include: list[str] = Field(default_factory=lambda: list(IMAGE_EXTENSIONS), description="Glob patterns of files to read.")
    size: tuple[int, int] = Field(description="Output [height, width] in pixels.")
    channels: Literal[1, 3, 4] = Field(3, description="1 grayscale, 3 RGB, 4 RGBA.")
    resize: Literal["stretch", "pad", "crop"] = Field(
        "stretch", description="stretch to size; pad: keep aspect and pad; crop: keep aspect and center-crop."
    )
    pad_value: int = Field(0, ge=0, le=255, description="Fill value of the border in pad mode.")
    dtype: Literal["uint8", "float32"] = Field("uint8", description="Stored dtype; float32 scales to [0, 1].")
    max_pixels: int = Field(40_000_000, gt=0, description="Images whose header declares more pixels are quarantined.")
    augment: Augment = Augment()

    @field_validator("size")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1 or max(value) > 8192:
            raise ValueError("height and width must be between 1 and 8192")
        return value


class AudioReaderConfig(FileInput):
    """Audio (WAV, FLAC, OGG, MP3, Opus) decoded with soundfile and resampled with soxr."""

    reader: Literal["audio"] = Field(description="Selects this reader.")
    include: list[str] = Field(default_factory=lambda: list(AUDIO_EXTENSIONS), description="Glob patterns of files to read.")
    sample_rate: int = Field(16000, ge=1000, le=192000, description="Every clip is resampled (soxr, HQ) to this rate.")
    channels: int = Field(1, ge=1, le=8, description="1 mixes down to mono; N keeps N channels (mono is repeated).")
    duration: float = Field(description="Seconds per example; shorter clips are zero-padded.", gt=0, le=600)
    long_clips: Literal["crop", "chunk"] = Field("crop", description="crop keeps the start; chunk makes windows.")
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


class CsvReaderConfig(Section):
    """Tabular rows read with Spark's CSV reader; preprocessing fitted with Spark ML on train."""

    reader: Literal["csv"] = Field(description="Selects this reader.")
    input: str = Field(description="A CSV file, or a directory of CSV files.")
    header: bool = Field(True, description="The first line holds column names.")
    columns: list[str] | None = Field(None, description="Column names when the file has no header.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator.")
    quote: str = Field('"', min_length=1, max_length=1, description="Quote character.")
    escape: str = Field('"', min_length=1, max_length=1, description="Escape inside quotes (RFC 4180 doubles the quote).")
    multiline: bool = Field(False, description="Allow quoted values that span lines.")
    encoding: str = Field("utf-8", description="Text encoding of the file.")
    na_values: list[str] = Field(
        default_factory=lambda: ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "?"],
        description="Values read as missing.",
    )
    numeric: list[str] = Field(default_factory=list, description="Numeric feature columns.")
    categorical: list[str] = Field(default_factory=list, description="Categorical feature columns.")
    categorical_encoding: Literal["onehot", "index"] = Field(
        "onehot", description="One-hot slots per category (plus one for missing/unseen), or the category index."
    )
    impute: Literal["mean", "median", "mode"] = Field("mean", description="Fills missing numeric values.")
    scale: bool = Field(False, description="Standardise features at ingest (else the model does it).")
    label: str | None = Field(None, description="Label column.")
    task: Literal["classification", "regression"] = Field(
        "classification", description="classification: label is a class name; regression: a number."
    )
    key_column: str | None = Field(None, description="Unique id column; default: file:row.")
    passthrough: list[str] = Field(default_factory=list, description="Columns copied to the shards as strings.")

    @model_validator(mode="after")
    def _columns_consistent(self):
        if not self.numeric and not self.categorical:
            raise ValueError("name at least one feature column in 'numeric' or 'categorical'")
        if not self.header and not self.columns:
            raise ValueError("a file without header needs 'columns'")
        roles = self.numeric + self.categorical + ([self.label] if self.label else []) + self.passthrough
        dupes = sorted({c for c in roles if roles.count(c) > 1})
        if dupes:
            raise ValueError(f"columns used twice: {', '.join(dupes)}")
        return self


ReaderConfig = Annotated[
    Union[ImageReaderConfig, AudioReaderConfig, CsvReaderConfig], Field(discriminator="reader")
]


class ExperimentConfig(Section):
    """One experiment: where Spark runs, the dataset, and how to ingest it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Experiment name (letters, digits, _ . -).")
    spark: SparkSettings = SparkSettings()
    dataset: DatasetSettings
    ingest: ReaderConfig
