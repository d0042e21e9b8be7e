"""How many Spark tasks score a split, and what they import: shared by eval, predict and export."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dltool.storage.manifest import Manifest

SCORING_MODULES = ("dltool.evaluate.score", "dltool.shards.feed", "dltool.tfenv")  # what scoring tasks import, besides TensorFlow
ROWS_PER_SCORING_TASK = 10_000  # below this a second task costs more than it saves: each one starts TensorFlow


def scoring_tasks(spark, rows: int) -> int:
    """Tasks for scoring `rows` rows: one per core, but never fewer than ROWS_PER_SCORING_TASK rows each.

    Every scoring task imports TensorFlow and loads the model (4-6 s here); two of them starting
    at once on two cores take longer than one, so a small split is scored by one task.
    """
    from dltool.spark.session import default_parallelism

    return min(default_parallelism(spark), tensorflow_tasks(rows))


def tensorflow_tasks(rows: int) -> int:
    """scoring_tasks before the session exists: how many of its workers should start TensorFlow."""
    return max(1, math.ceil(rows / ROWS_PER_SCORING_TASK))


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
