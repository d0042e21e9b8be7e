"""How many Spark tasks score a split, and what they import: shared by eval, predict and export."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dltool.storage.manifest import Manifest

# What scoring tasks import, besides TensorFlow (onnxruntime: for ONNX copies; a worker without it skips it).
# They read shards without pyarrow's to_numpy (codec.numbers), which imports pandas: 0.3-0.5 s of a fresh worker.
SCORING_MODULES = ("dltool.evaluate.score", "dltool.evaluate.metrics", "dltool.evaluate.targets", "dltool.shards.feed",
                   "dltool.artefacts", "dltool.tfenv", "onnxruntime")
# Predict's tasks also build Arrow columns of their outputs, from their buffers (pa.array imports pandas)
PREDICT_MODULES = (*SCORING_MODULES, "dltool.evaluate.predict")
ROWS_PER_SCORING_TASK = 10_000  # below this a second task costs more than it saves: each one starts TensorFlow
ROWS_PER_ONNX_TASK = 2_000  # the same for tasks scoring ONNX copies, which start no TensorFlow


def scoring_tasks(cores: int, rows: int, tensorflow: bool = True) -> int:
    """Tasks for scoring `rows` rows on `cores` cores (Spark's default parallelism, or a local master's threads):
    one per core, but never fewer than ROWS_PER_SCORING_TASK rows each when the tasks start TensorFlow
    (ROWS_PER_ONNX_TASK when they score ONNX copies).

    Every TensorFlow scoring task imports TensorFlow and loads the model (4-6 s here); two of them
    starting at once on two cores take longer than one, so a small split is scored by one task.
    onnxruntime loads in a tenth of a second.
    """
    per_task = ROWS_PER_SCORING_TASK if tensorflow else ROWS_PER_ONNX_TASK
    return min(max(1, cores), max(1, math.ceil(rows / per_task)))


def threads_here(settings, tensorflow: bool) -> int:
    """The threads this process scores in, with no Spark session: a local master's cores for ONNX copies
    (`spark/local.py`); 0 where Spark tasks score (TensorFlow, a cluster, spark-submit)."""
    from dltool.spark.local import local_cores

    return 0 if tensorflow else local_cores(settings)


def scoring_session(config, rows: int, tensorflow: bool, warm: tuple[str, ...]) -> tuple[Any, int]:
    """Where `rows` rows are scored: (None, threads) in this process (`threads_here`), else (the Spark session,
    its default parallelism), its workers importing `warm` (and TensorFlow in as many as will score)."""
    threads = threads_here(config.spark, tensorflow)
    if threads:
        return None, threads
    from dltool.spark.session import default_parallelism, spark_session
    from dltool.spark.shipping import config_code

    spark = spark_session(config.spark, user_code=config_code(config), warm=warm,
                          warm_tensorflow=tensorflow_tasks(rows) if tensorflow else 0, sql=False)  # fmt: skip
    return spark, default_parallelism(spark)


def tensorflow_tasks(rows: int) -> int:
    """scoring_tasks before the session exists: how many of its workers should start TensorFlow."""
    return max(1, math.ceil(rows / ROWS_PER_SCORING_TASK))


def task_gpus(settings) -> bool:
    """Whether the config gives Spark tasks GPUs (spark.task.resource.gpu.amount): TensorFlow then scores on them."""
    return bool(settings.conf.get("spark.task.resource.gpu.amount"))


@dataclass(frozen=True)
class SumsSpec:
    """How a scoring task builds its metric sums: the class names and top-k list, or the regression loss."""

    task: str  # "classification" or "regression"
    class_names: tuple[str, ...] = ()
    top_k: tuple[int, ...] = ()
    loss: str | None = None


@dataclass(frozen=True)
class ScoreJob:
    """What every scoring task of eval and export gets (plain, picklable values)."""

    dataset: str  # URI
    manifest: Manifest
    split: str
    sums: SumsSpec
    modules: tuple[str, ...]  # imported before loading a model: a factory's custom layers
    models: tuple[str, ...]  # URIs of the models to score, each on the whole split
    batch: int
    cache_mb: int


@dataclass(frozen=True)
class PredictJob:
    """What every task of a predict gets (plain, picklable values)."""

    dataset: str  # URI
    manifest: Manifest
    model: str  # URI
    output: str  # URI of the staged output folder
    modules: tuple[str, ...]
    vocabulary: tuple[str, ...] | None  # the class names (classification)
    kind: str | None  # "class" or "regression": the trained model's label
    keep: tuple[str, ...]  # columns copied into the output
    label_column: str | None  # a raw table's label column, carried as it is
