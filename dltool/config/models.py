"""Pydantic models of the experiment YAML: one class per section, validated once."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

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
    non_finite: Literal["missing", "quarantine"] = Field(
        "missing", description="NaN, inf and -inf in numeric columns: treat as missing (imputed) or quarantine the row."
    )
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


class ApplicationSettings(Section):
    """A keras.applications architecture for transfer learning; weights come from a local file only."""

    name: str = Field(description="keras.applications model name, e.g. MobileNetV2, ResNet50, EfficientNetB0.")
    weights: str | None = Field(
        None, description="Local .h5/.weights.h5 file of the base's weights (no download); none: random initialisation."
    )
    freeze_base: bool = Field(True, description="Keep the base's weights fixed and train only the new head.")
    pooling: Literal["avg", "max"] = Field("avg", description="Global pooling between the base and the head.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout before the new head.")


class ModelSettings(Section):
    """The model: exactly one of builtin, layers, application or factory (default: builtin auto).

    dltool puts the dataset's normalisation in front of it (from the manifest's train
    statistics) and, except for a factory, the output head sized from the manifest's labels.
    """

    builtin: Literal["auto", "small_cnn", "audio_cnn", "mlp"] | None = Field(
        None, description="Built-in architecture; auto picks by reader (image: small_cnn, audio: audio_cnn, csv: mlp)."
    )
    layers: list[dict[str, Union[dict, None]]] | None = Field(
        None, description="Keras layers in order, each {LayerName: {arguments}}; dltool adds the output head."
    )
    application: ApplicationSettings | None = Field(None, description="A keras.applications base with a new head.")
    factory: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="'module:function' called as function(input_shape, outputs, manifest, **args); returns a Keras "
        "model whose output has `outputs` units (probabilities for classification).",
    )
    args: dict = Field(
        default_factory=dict,
        description="Keyword arguments for the builtin, the factory, or the application's constructor (e.g. alpha).",
    )

    @model_validator(mode="after")
    def _exactly_one(self):
        chosen = [k for k in ("builtin", "layers", "application", "factory") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(f"choose one of builtin, layers, application, factory (got {', '.join(chosen)})")
        if self.args and self.layers is not None:
            raise ValueError("args apply to builtin, application and factory models only")
        return self

    @property
    def kind(self) -> str:
        for k in ("layers", "application", "factory"):
            if getattr(self, k) is not None:
                return k
        return "builtin"


class OptimizerSettings(Section):
    """Optimizer by Keras name, with its arguments."""

    name: str = Field("adam", description="Keras optimizer name: adam, adamw, sgd, rmsprop, nadam, ...")
    learning_rate: float = Field(1e-3, gt=0, description="Base learning rate (the peak, with a schedule).")
    args: dict = Field(default_factory=dict, description="Other optimizer arguments, e.g. {momentum: 0.9}.")
    clip_norm: float | None = Field(None, gt=0, description="Clip each step's gradients to this global norm.")


class ScheduleSettings(Section):
    """Learning-rate schedule over optimizer steps."""

    kind: Literal["constant", "step", "cosine"] = Field(
        "cosine", description="Shape of the schedule; cosine decays to min_fraction, so the last epochs settle."
    )
    warmup_epochs: float = Field(1, ge=0, description="Linear warm-up from 0 to the learning rate over these epochs.")
    step_epochs: float = Field(10, gt=0, description="step: multiply the rate by `factor` every this many epochs.")
    factor: float = Field(0.1, gt=0, le=1, description="step: multiplier applied at each step.")
    min_fraction: float = Field(0.0, ge=0, le=1, description="cosine: final rate as a fraction of the peak.")


class EarlyStoppingSettings(Section):
    """Stop when the monitored metric has not improved for `patience` epochs."""

    patience: int = Field(5, ge=1, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")


class TrainSettings(Section):
    """Data-parallel training: one Spark barrier task per TensorFlow worker."""

    run_dir: str = Field(description="Run directory: config snapshot, checkpoints, history, TensorBoard logs, model.")
    workers: int | None = Field(
        None, ge=1, description="TensorFlow workers (one barrier task each); default: the cluster's task slots."
    )
    epochs: int = Field(10, ge=1, description="Epochs to train.")
    global_batch_size: int | None = Field(
        None, ge=1, description="Examples per step over all workers (split evenly); or give per_worker_batch_size."
    )
    per_worker_batch_size: int | None = Field(None, ge=1, description="Examples per step on each worker.")
    steps_per_epoch: int | None = Field(
        None, ge=1, description="Steps per epoch; default: train rows // global batch (at least 1)."
    )
    model: ModelSettings = ModelSettings()
    optimizer: OptimizerSettings = OptimizerSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    loss: Literal["auto", "sparse_categorical_crossentropy", "mse", "mae", "huber"] = Field(
        "auto", description="auto: cross-entropy for classes, mse for regression."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Classification only.")
    metrics: list[str] = Field(
        default_factory=lambda: ["auto"],
        description="auto (accuracy or mae), accuracy, top_K_accuracy (e.g. top_3_accuracy), mae, mse, rmse.",
    )
    class_weights: Union[Literal["none", "balanced"], dict[str, float]] = Field(
        "none", description="none, balanced (from the train split's class counts), or {class name: weight}."
    )
    validation_every_steps: int | None = Field(
        None, ge=1, description="Also score the val split every N steps (always at each epoch end)."
    )
    monitor: str = Field("val_loss", description="Metric for best checkpoint and early stopping, e.g. val_accuracy.")
    early_stopping: EarlyStoppingSettings | None = Field(None, description="Stop early; unset: train all epochs.")
    final: Literal["best", "last"] = Field(
        "best", description="The model kept in run_dir/model: the best epoch by `monitor`, or the last epoch's."
    )
    keep_checkpoints: int | None = Field(None, ge=1, description="Keep the newest N epoch checkpoints (and the best).")
    seed: int = Field(0, description="Seeds initialisation, shuffling and dropout.")
    shuffle_buffer: int = Field(4096, ge=0, description="Examples in the shuffle buffer when streaming shards.")
    cache_mb: int = Field(1024, ge=0, description="Hold a worker's share in memory when it fits this budget.")
    mixed_precision: bool = Field(False, description="float16 compute on GPU (ignored on CPU).")
    max_retries: int = Field(1, ge=0, description="Relaunch a failed run from its newest checkpoint this often.")
    timeout_s: int = Field(300, ge=10, description="A collective or barrier wait longer than this fails the run.")

    @model_validator(mode="after")
    def _one_batch_size(self):
        if self.global_batch_size is not None and self.per_worker_batch_size is not None:
            raise ValueError("give global_batch_size or per_worker_batch_size, not both")
        return self


class ExperimentConfig(Section):
    """One experiment: where Spark runs, the dataset, and how to ingest it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Experiment name (letters, digits, _ . -).")
    spark: SparkSettings = SparkSettings()
    dataset: DatasetSettings
    ingest: Union[ImageReaderConfig, AudioReaderConfig, CsvReaderConfig, None] = Field(
        None, discriminator="reader", description="How to ingest the dataset (needed by ingest)."
    )
    train: TrainSettings | None = Field(None, description="How to train (needed by train).")
    # The config file's folder, where a model factory's module is looked up first (not part of the YAML).
    _source_dir: str | None = PrivateAttr(None)

    @property
    def source_dir(self) -> str | None:
        return self._source_dir
