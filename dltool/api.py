"""The Python API: the verbs of the command line as functions that take a config and return typed results.

A config is a YAML path, a dict (the YAML's content) or an `ExperimentConfig`. Keyword
overrides name a config field with `__` for its dots (`train__epochs=3`,
`dataset__path="/data/x"`) and replace its value, as the command line's options do. A
SparkSession that is already active (a notebook's, spark-submit's) is used; else one is
started from the config's `spark:` section. Failures raise `dltool.errors.DltoolError`
subclasses, whose `exit_code` is the one the command line would exit with.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from dltool.config.models import ExperimentConfig
    from dltool.evaluate.result import EvalResult, PredictResult
    from dltool.ingest.gc import GcResult
    from dltool.ingest.results import IngestPlan, IngestResult
    from dltool.chain import RunResult
    from dltool.export import ExportResult
    from dltool.train.result import TrainResult
    from dltool.tune import TuneResult

    Config = Union[str, os.PathLike, dict, ExperimentConfig]

__all__ = ["evaluate", "export", "gc", "ingest", "load_dataset", "predict", "run", "train", "tune", "validate"]


def ingest(config: Config, *, overwrite: bool = False, refit: bool = False, dry_run: bool = False,
           progress: bool = False, **overrides: Any) -> IngestResult | IngestPlan:  # fmt: skip
    """Read the config's raw inputs and write its dataset (Parquet shards and a manifest); up to date: nothing done.

    An existing dataset whose inputs changed gets a new version with the new and changed inputs;
    `overwrite` rebuilds it from scratch; `refit` rebuilds it as its next version, fitting the classes
    and statistics again while every record keeps its split (docs/guide.md "Growing datasets")."""
    from dltool.ingest.run import run_ingest

    return run_ingest(_config(config, overrides), overwrite=overwrite, refit=refit, dry_run=dry_run, progress=progress)


def train(config: Config, *, resume: bool = False, overwrite: bool = False, from_tune: bool = False,
          progress: bool = False, quiet: bool = False, warm_start: str | None = None,
          **overrides: Any) -> TrainResult:  # fmt: skip
    """Train the config's model on its dataset, one Spark barrier task per TensorFlow worker.

    `progress`: the live view on stderr; else one line per epoch there, or nothing when `quiet`.
    `from_tune`: with the best values of the run dir's study (`dltool tune`); overrides still win.
    `warm_start`: a run dir (or checkpoint folder, .keras file) whose model this one starts from: the same
    preprocessing, trained on another version of the dataset (`DATASET@N`).
    """
    from dltool.train.result import TrainResult
    from dltool.train.run import run_training

    cfg = _config(config, overrides)
    if from_tune:
        from dltool.config.loader import as_config
        from dltool.tune import best_values

        cfg = as_config(cfg, {**best_values(cfg), **_dotted(overrides)})
    summary = run_training(cfg, resume=resume, overwrite=overwrite, progress=progress, quiet=quiet,
                           warm_start=warm_start)
    return TrainResult.from_summary(cfg.train.run_dir, summary)


def evaluate(config: Config, *, checkpoint: str | None = None, model: str | None = None, split: str = "test",
             input: str | None = None, fail_under: dict[str, float] | None = None, progress: bool = False,
             **overrides: Any) -> EvalResult:  # fmt: skip
    """Score the run's model (or `checkpoint`: a list, 'all'; or an exported `model` file) on a split or on
    labelled raw `input`; `fail_under={"accuracy": 0.9}` raises QualityGateError (exit 3) when missed."""
    from dltool.evaluate.score import run_eval

    gates = _gates(fail_under)
    return run_eval(_config(config, overrides), checkpoint=checkpoint, split=split, fail_under=gates,
                    progress=progress, input_uri=_local(input), model_uri=_local(model))  # fmt: skip


def predict(config: Config, input: str, output: str, *, checkpoint: str | None = None, model: str | None = None,
            split: str = "test", keep: list[str] | tuple[str, ...] = (), overwrite: bool = False, progress: bool = False,
            **overrides: Any) -> PredictResult:  # fmt: skip
    """Predict every row of a dataset split or every raw input (files or table rows) into Parquet at `output`.

    `model`: a .keras/.tflite/.onnx file, a SavedModel folder or `models:/NAME@ALIAS` instead of the run's.
    """
    from dltool.evaluate.predict import run_predict
    from dltool.evaluate.result import PredictResult

    registered = model is not None and model.startswith(("models:/", "runs:/"))
    summary = run_predict(_config(config, overrides), _local(input), _local(output), checkpoint=checkpoint, split=split,
                          overwrite=overwrite, progress=progress, keep=list(keep),
                          model_uri=model if registered else _local(model))  # fmt: skip
    return PredictResult.from_json(summary)


def export(config: Config, formats: list[str] | tuple[str, ...], *, output: str | None = None,
           checkpoint: str | None = None, calibration: int = 500, split: str = "test",
           max_drop: dict[str, float] | None = None, progress: bool = False, **overrides: Any) -> ExportResult:  # fmt: skip
    """Export the run's model as each of `formats` (savedmodel, tflite, tflite-fp16, tflite-int8, onnx) and score
    every file against it on `split`; `max_drop={"accuracy": 0.02}` raises QualityGateError (exit 3) when missed."""
    from dltool.export import ExportResult, run_export

    drops = _drops(max_drop)
    summary = run_export(_config(config, overrides), list(formats), output=_local(output), checkpoint=checkpoint,
                         calibration=calibration, split=split, max_drop=drops, progress=progress)  # fmt: skip
    return ExportResult.from_json(summary)


def tune(config: Config, *, resume: bool = False, overwrite: bool = False, progress: bool = False,
         **overrides: Any) -> TuneResult:  # fmt: skip
    """Search the config's `tune:` space with Optuna (the [tune] extra), each trial a training on Spark."""
    from dltool.tune import TuneResult, run_tune

    summary = run_tune(_config(config, overrides), resume=resume, overwrite=overwrite, progress=progress)
    return TuneResult.from_summary(summary)


def run(config: Config, *, until: str = "eval", fail_under: dict[str, float] | None = None,
        formats: list[str] | tuple[str, ...] = (), max_drop: dict[str, float] | None = None, overwrite: bool = False,
        progress: bool = False, **overrides: Any) -> RunResult:  # fmt: skip
    """Ingest, train, eval (and export) in one Spark application, skipping the steps that are up to date."""
    from dltool.chain import RunResult, run_chain

    drops = _drops(max_drop)
    summary = run_chain(_config(config, overrides), until=until, fail_under=_gates(fail_under), formats=list(formats),
                        max_drop=drops, overwrite=overwrite, progress=progress)  # fmt: skip
    return RunResult.from_json(summary)


def gc(dataset: str, *, keep: int = 1, dry_run: bool = False) -> GcResult:
    """Remove the shards and version files of a grown dataset that none of its newest `keep` versions uses
    (`DATASET@N` of a removed version no longer reads); `dry_run`: say what would go, remove nothing."""
    from dltool.ingest.gc import collect

    return collect(os.fspath(dataset), keep=keep, dry_run=dry_run)


def load_dataset(path: str, split: str | None = "train", *, spark: SparkSession | None = None, vectors: bool = False,
                 storage: dict | None = None) -> DataFrame:  # fmt: skip
    """A dltool dataset's split as a Spark DataFrame: `features` (array<float>, or an ML vector with `vectors`),
    `label` (a double carrying the class names as Spark ML attributes, as StringIndexer's output does), `key` and
    `split`; `split=None` reads every split."""
    from dltool.ml.dataset import read_dataset

    return read_dataset(path, split, spark=spark, vectors=vectors, storage=storage)


def validate(config: Config, *, untrusted: bool = False, **overrides: Any) -> list[str]:
    """Check a config without starting Spark: the schema (every error with its YAML line), the tune: space, the
    input's existence on local disk; `untrusted` also refuses a config that names code to run. Returns warnings
    (an input on a store that is not checked); raises ConfigError (InputNotFoundError for a missing input)."""
    from dltool.config.loader import as_config
    from dltool.config.trust import refuse_code
    from dltool.errors import InputNotFoundError

    cfg = as_config(config, _dotted(overrides), check_tune=True)
    refuse_code(cfg, str(config) if isinstance(config, (str, os.PathLike)) else cfg.name, always=untrusted)
    source = cfg.ingest.input if cfg.ingest is not None else None
    if source is None or getattr(cfg.ingest, "format", None) == "table":
        return []
    if "://" in source:
        return [f"ingest.input {source} is on a store: not checked here (dltool doctor CONFIG reaches it)"]
    if not os.path.exists(source):
        raise InputNotFoundError(f"ingest.input: {source} does not exist")
    return []


def _dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    """`train__epochs=3` as the config's dotted field `train.epochs`; local paths made absolute."""
    from dltool.config.loader import PATH_FIELDS

    dotted = {key.replace("__", "."): value for key, value in overrides.items()}
    return {key: _local(value) if key in PATH_FIELDS and isinstance(value, (str, os.PathLike)) else value
            for key, value in dotted.items()}  # fmt: skip


def _config(config: Config, overrides: dict[str, Any]) -> ExperimentConfig:
    from dltool.config.loader import as_config

    return as_config(config, _dotted(overrides))


def _gates(fail_under: dict[str, float] | None) -> dict[str, float]:
    from dltool.evaluate.score import parse_fail_under

    return parse_fail_under([f"{metric}={value}" for metric, value in (fail_under or {}).items()])


def _drops(max_drop: dict[str, float] | None) -> dict[str, float]:
    from dltool.export import parse_max_drop

    return parse_max_drop([f"{metric}={value}" for metric, value in (max_drop or {}).items()])


def _local(uri: str | os.PathLike | None) -> str | None:
    """A local path made absolute (executors do not share the driver's working directory); URIs as they are."""
    if uri is None:
        return None
    uri = os.fspath(uri)
    return uri if "://" in uri else os.path.abspath(uri)
