"""Pydantic models of the experiment YAML: one class per section, validated once.

The built-in readers' sections (`ingest:` with `reader: NAME`) are in config/readers.py, so validating a
config imports no reader; registering a reader made outside dltool adds its section to `ExperimentConfig.ingest`.
"""

from __future__ import annotations

import json
import re
from typing import Literal, Optional, Union

from pydantic import Field, PrivateAttr, field_validator, model_validator

from dltool.config.base import FileInput, LabelFromParentDir, LabelFromRegex, NoLabel, Section  # noqa: F401
from dltool.config.readers import INGEST_SECTIONS, RESERVED, on_change
from dltool.config.redaction import REDACTED, redact, uri_has_credentials  # noqa: F401  (REDACTED: re-exported)

__all__ = ["ExperimentConfig", "FileInput", "Section", "TrainSettings", "use_readers"]


class SparkSettings(Section):
    """Where Spark runs. Under spark-submit the active session is reused and these are ignored."""

    master: str = Field("local[*]", description="Spark master URL: local[*], local[2], spark://host:7077, yarn, k8s://...")
    app_name: str = Field("dltool", description="Spark application name.")
    conf: dict[str, Union[str, int, float, bool]] = Field(
        default_factory=dict, description="Extra Spark settings, e.g. spark.driver.memory: 2g."
    )
    jvm_cache: bool = Field(
        True,
        description="Start Spark's JVM from an archive of the classes it loads (class data sharing, about 200 MB "
        "under ~/.cache/dltool/jvm): about 3 s faster start. The first run writes it as it exits.",
    )


class StorageSettings(Section):
    """Object stores (S3, MinIO, Ceph): where to reach them. Credentials stay out of the config: each
    process takes them from AWS_* variables, a profile in the shared credentials file, or its instance role."""

    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint, e.g. http://minio.internal:9000 (default: AWS_ENDPOINT_URL_S3, "
        "AWS_ENDPOINT_URL, else AWS itself).",
    )
    region: str | None = Field(None, description="Region (default: AWS_REGION, AWS_DEFAULT_REGION; us-east-1 with an endpoint).")
    path_style: bool | None = Field(
        None, description="Address buckets by path (host/bucket/key), as MinIO and Ceph want. Default: by path with "
        "an endpoint, by virtual host on AWS.",
    )
    profile: str | None = Field(None, description="A profile of the AWS shared credentials file to sign requests with.")
    credentials_file: str | None = Field(
        None, description="The shared credentials file (default: AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials).",
    )
    anonymous: bool = Field(False, description="Send unsigned requests (public buckets).")

    @model_validator(mode="after")
    def _no_secrets(self):
        if self.endpoint_url and "@" in self.endpoint_url.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError("endpoint_url must not hold credentials: use AWS_* variables or a profile")
        return self


class MlflowSettings(Section):
    """Log runs to an MLflow tracking server (needs `pip install 'dltool[mlflow]'`)."""

    tracking_uri: str = Field(description="MLflow tracking URI, e.g. http://mlflow.internal:5000 (or a file:// or sqlite:// store).")
    experiment: str = Field("dltool", description="MLflow experiment (created when missing).")
    run_name: str | None = Field(None, description="Name of the MLflow run (default: the config's name).")
    register_as: str | None = Field(None, description="Register the trained model under this name in the model registry.")

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        if uri_has_credentials(value):
            raise ValueError("tracking_uri must not hold credentials (user:password@): set MLFLOW_TRACKING_USERNAME "
                             "and MLFLOW_TRACKING_PASSWORD, or the database's own credential file")
        return value


class TrackingSettings(Section):
    """Where runs are recorded besides the run directory."""

    mlflow: MlflowSettings | None = Field(None, description="MLflow: config as params, per-epoch metrics, files, model.")


class SplitSettings(Section):
    """Which split each record lands in: a stable hash of its key (or group), its path, or a column."""

    by: Literal["hash", "path", "column"] = Field(
        "hash", description="hash: fractions by a stable hash; path: a regex over the file's path names the "
        "split (train/ and test/ folders, train.csv and test.csv); column: a column names it (table readers).",
    )
    train: float = Field(0.8, ge=0, le=1, description="by: hash: fraction of records in the train split.")
    val: float = Field(0.1, ge=0, le=1, description="by: hash: fraction of records in the validation split.")
    test: float = Field(0.1, ge=0, le=1, description="by: hash: fraction of records in the test split.")
    salt: str = Field("", description="Changes the hash, and so which records land in which split.")
    stratify: bool = Field(
        False, description="Keep every class's fractions: each class is cut by its own hash order, so its counts "
        "per split are within one of the fractions (a new record can move at most one per cut of its class).",
    )
    group: str | None = Field(
        None, description="Records that must share a split: file readers, a regex over the path whose first "
        "group names the group (e.g. a speaker folder); table readers, a column. The group is hashed, not the key.",
    )
    pattern: str | None = Field(
        None, description="by: path: a regex over the path relative to the input whose first group names the "
        "split; default: a folder or file name that is, or starts with, train, training, val, valid, validation, "
        "dev, test, testing or a key of `names` followed by / . _ or - (train/, test.csv), in any case.",
    )
    column: str | None = Field(None, description="by: column: the column whose values name the split.")
    names: dict[str, Literal["train", "val", "test"]] = Field(
        default_factory=dict, description="by: path or column: more names for the splits, e.g. {holdout: test}; "
        "training, valid, validation, dev and testing are known.",
    )
    val_from_train: float = Field(
        0.1, ge=0, lt=1, description="by: path or column, when the data has no validation split: this fraction of "
        "train becomes val (by the stable hash, stratified), so training still monitors a validation metric.",
    )

    @model_validator(mode="after")
    def _consistent(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1.0, got {total:g}")
        if self.by == "column" and not self.column:
            raise ValueError("by: column needs 'column', the column that names each row's split")
        for name, value in (("column", self.column), ("group", self.group)):
            if value and value.lower() in RESERVED:
                raise ValueError(f"{name}: {value!r} is one of dltool's own per-row columns; rename it in the data")
        for name, value in (("pattern", self.pattern), ("group", self.group)):
            if value is None or (name == "group" and _is_column_name(value)):
                continue
            try:
                compiled = re.compile(value)
            except re.error as e:
                raise ValueError(f"{name}: not a regular expression: {e}") from e
            if compiled.groups < 1:
                raise ValueError(f"{name}: the regex needs a (group) that captures the {name.replace('pattern', 'split')} name")
        return self

    def path_pattern(self) -> re.Pattern:
        """by: path: the regex whose first group names a file's split."""
        if self.pattern is not None:
            return re.compile(self.pattern)
        names = sorted({*KNOWN_SPLIT_NAMES, *(k.strip().lower() for k in self.names)}, key=len, reverse=True)
        return re.compile(r"(?:^|/)(" + "|".join(re.escape(n) for n in names) + r")(?=[/._-])", re.IGNORECASE)

    def split_name(self, text: str | None) -> str | None:
        """train, val or test for a name found in a path or column, else None."""
        if text is None:
            return None
        names = {**KNOWN_SPLIT_NAMES, **{k.strip().lower(): v for k, v in self.names.items()}}
        return names.get(text.strip().lower())


KNOWN_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                     "dev": "val", "test": "test", "testing": "test"}  # fmt: skip


def _is_column_name(text: str) -> bool:
    """A group given as a plain name (a table column) rather than a regex with a capture group."""
    return "(" not in text


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
    on_duplicates: Literal["warn", "fail", "drop_from_eval"] = Field(
        "warn", description="Identical records (same file bytes, same typed row) in more than one split: warn, "
        "fail the ingest (exit 3), or drop the val and test copies of what train holds.",
    )
    new_classes: Literal["fail", "quarantine"] = Field(
        "fail", description="An incremental ingest that finds files (or rows) of a class the dataset does not have: "
        "fail (learn it with `ingest --refit`), or quarantine them and go on.",
    )

    @model_validator(mode="after")
    def _row_group_fits_shard(self):
        if self.row_group_mb > self.shard_mb:
            raise ValueError(f"row_group_mb ({self.row_group_mb}) must not exceed shard_mb ({self.shard_mb})")
        return self


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

    builtin: Literal["auto", "small_cnn", "audio_cnn", "mlp", "tabular", "text_cnn", "text_mlp"] | None = Field(
        None, description="Built-in architecture; auto picks by reader (image: small_cnn, audio: audio_cnn, csv and "
        "table: tabular, text: text_cnn or text_mlp).",
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
        None, ge=1, description="TensorFlow workers (one barrier task each); default: one on a local master (it "
        "uses every core: two workers on two cores trained 1.3-2.2x slower), the cluster's task slots otherwise."
    )
    epochs: int | None = Field(
        None, ge=1, description="Epochs to train; default: sized to the train rows (at least 1,000 steps, 2,000 and 80 "
        "epochs up to 1.1M examples for tabular with early stopping, 10 to 300 epochs) with early stopping on `monitor`.",
    )
    global_batch_size: int | None = Field(
        None, ge=1, description="Examples per step over all workers (split evenly); or give per_worker_batch_size; "
        "default: about 1/32 of the train rows, 8 to 64.",
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
    steps_per_execution: int = Field(
        16, ge=1, le=1000, description="Train steps per call into TensorFlow (progress is reported between calls). "
        "Fewer calls run faster, and with 2+ workers each call leaks a few KB inside TensorFlow's collectives.",
    )
    monitor: str = Field("val_loss", description="Metric for best checkpoint and early stopping, e.g. val_accuracy.")
    early_stopping: EarlyStoppingSettings | None = Field(
        None, description="Stop early; unset: on with sized epochs (patience 10, or a tenth of them), else off."
    )
    final: Literal["best", "last"] = Field(
        "best", description="The model kept in run_dir/model: the best epoch by `monitor`, or the last epoch's."
    )
    keep_checkpoints: int | None = Field(None, ge=1, description="Keep the newest N epoch checkpoints (and the best).")
    seed: int = Field(0, description="Seeds initialisation, shuffling and dropout.")
    shuffle_buffer: int = Field(4096, ge=0, description="Examples in the shuffle buffer when streaming shards.")
    cache_mb: int = Field(1024, ge=0, description="Hold a worker's share in memory when it fits this budget.")
    mixed_precision: bool = Field(False, description="float16 compute on GPU (ignored on CPU).")
    max_retries: int = Field(1, ge=0, description="Relaunch a failed run from its newest checkpoint this often.")
    timeout_s: int = Field(300, ge=10, description="A worker making no progress this long (a peer stuck or gone), or a barrier wait this long, fails the attempt.")

    @model_validator(mode="after")
    def _one_batch_size(self):
        if self.global_batch_size is not None and self.per_worker_batch_size is not None:
            raise ValueError("give global_batch_size or per_worker_batch_size, not both")
        return self


DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")


class PrunerSettings(Section):
    """Stops a trial early when its per-epoch validation results fall behind the others'."""

    type: Literal["median", "hyperband", "none"] = Field(
        "median", description="median: worse than the median of finished trials at the same epoch; hyperband: "
        "successive halving over epochs; none: every trial runs all its epochs.",
    )
    startup_trials: int = Field(2, ge=0, description="median: trials that finish before any is pruned.")
    warmup_epochs: int = Field(1, ge=0, description="median: epochs every trial runs before it can be pruned.")


class TuneSettings(Section):
    """A hyperparameter search (dltool tune): trials of the train section with values from `space`."""

    metric: str | None = Field(None, description="Metric a trial is judged by (its best epoch); default train.monitor.")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="Default: minimize losses and errors (loss, mae, mse, rmse), maximize the rest."
    )
    trials: int = Field(20, ge=1, description="Trials in the study (failed ones count; interrupted ones are rerun).")
    parallel: int | None = Field(
        None, ge=1, description="Trials at once; default: the cluster's task slots / the workers of one trial."
    )
    sampler: Literal["tpe", "random", "grid"] = Field(
        "tpe", description="tpe (Optuna's default), random, or grid (every combination of `choice` lists)."
    )
    seed: int | None = Field(None, description="Seeds the sampler; default train.seed.")
    # The bare type (pruner: median) is turned into PrunerSettings before validation; the union shows it in the schema.
    pruner: Union[PrunerSettings, Literal["median", "hyperband", "none"]] = Field(
        PrunerSettings(), description="Stops poor trials early: {type: median, startup_trials: 2, warmup_epochs: 1}, "
        "or just the type (median, hyperband, none).",
    )
    space: dict[str, dict] = Field(
        min_length=1,
        description="Setting -> distribution, e.g. train.optimizer.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}; "
        "one of {uniform: [low, high]}, {loguniform: [low, high]}, {int: [low, high], step: 1}, {choice: [a, b, ...]}.",
    )
    enqueue: list[dict] = Field(
        default_factory=list,
        description="Trials to run first, as {setting: value} maps (e.g. the values you train with today).",
    )

    @model_validator(mode="before")
    @classmethod
    def _pruner_shorthand(cls, data):
        if isinstance(data, dict) and isinstance(data.get("pruner"), str):
            data = {**data, "pruner": {"type": data["pruner"]}}
        return data

    @model_validator(mode="after")
    def _valid_space(self):
        for key, spec in self.space.items():
            if not key.startswith("train.") or key.count(".") < 1 or key == "train.run_dir":
                raise ValueError(f"space key {key!r}: only train.* settings can be searched (e.g. train.epochs)")
            kinds = [k for k in spec if k in DISTRIBUTIONS]
            extra = sorted(set(spec) - set(DISTRIBUTIONS) - {"step"})
            if len(kinds) != 1 or extra:
                raise ValueError(f"space.{key}: give exactly one of {', '.join(DISTRIBUTIONS)} (and an optional step)")
            kind, value = kinds[0], spec[kinds[0]]
            if kind == "choice":
                if not isinstance(value, list) or not value:
                    raise ValueError(f"space.{key}: choice needs a non-empty list of values")
                continue
            numeric = (int,) if kind == "int" else (int, float)
            if (not isinstance(value, list) or len(value) != 2
                    or not all(isinstance(v, numeric) and not isinstance(v, bool) for v in value)):  # fmt: skip
                raise ValueError(f"space.{key}: {kind} needs [low, high] ({'integers' if kind == 'int' else 'numbers'})")
            low, high = value
            if low >= high or (kind == "loguniform" and low <= 0):
                raise ValueError(f"space.{key}: {kind} needs low < high{' and low > 0' if kind == 'loguniform' else ''}")
        if self.sampler == "grid" and any("choice" not in spec for spec in self.space.values()):
            raise ValueError("sampler grid: every space entry must be a choice list")
        for number, trial in enumerate(self.enqueue):
            unknown = sorted(set(trial) - set(self.space))
            if unknown:
                raise ValueError(f"enqueue[{number}]: {unknown} not in the space")
        return self


class ExperimentConfig(Section):
    """One experiment: where Spark runs, the dataset, and how to ingest it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Experiment name (letters, digits, _ . -).")
    spark: SparkSettings = SparkSettings()
    storage: StorageSettings = StorageSettings()
    tracking: TrackingSettings = TrackingSettings()
    dataset: DatasetSettings
    # The registered readers' configs, tagged by `reader:` (see use_readers).
    ingest: Optional[Section] = Field(None, description="How to ingest the dataset (needed by ingest).")
    train: TrainSettings | None = Field(None, description="How to train (needed by train).")
    tune: TuneSettings | None = Field(None, description="A hyperparameter search over train settings (needed by tune).")
    # The config file's folder, where a model factory's module is looked up first (not part of the YAML).
    _source_dir: str | None = PrivateAttr(None)

    @property
    def source_dir(self) -> str | None:
        return self._source_dir

    def redacted(self) -> dict:
        """The config as JSON for files dltool writes (run dir snapshot, trackers), through config.redaction:
        settings that look like secrets show as REDACTED, as Spark's UI does, and URIs lose their user info."""
        return redact(json.loads(self.model_dump_json()))


def use_readers() -> None:
    """Make `ingest:` accept exactly the registered sections (config.readers), told apart by their `reader:` field.

    Called once here and again whenever a reader registered later adds its section, so a reader declared
    outside dltool is validated, documented (`dltool schema`, the reference) and loaded like a built-in.
    """
    configs = list(INGEST_SECTIONS.values())
    field = ExperimentConfig.model_fields["ingest"]
    field.annotation = Optional[Union[tuple(configs)]]
    field.discriminator = "reader" if len(configs) > 1 else None
    ExperimentConfig.model_rebuild(force=True)


use_readers()
on_change(use_readers)
