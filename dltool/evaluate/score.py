"""`dltool eval`: score saved models on a dataset split with Spark and write eval.json, a table and plots.

The driver checks everything it can without TensorFlow (run dir, checkpoints, split, model
signature, --fail-under names), then runs ONE Spark job: one task per task slot, each holding
a contiguous share of the split's rows. A task loads each model once, feeds its share through
it in numpy batches and returns exact metric sums per model; the driver merges them, so the
figures do not depend on how the split was cut.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from dltool.errors import ConfigError, DltoolError, ErrorRecord, QualityGateError, map_errors
from dltool.evaluate.metrics import headline, higher_is_better
from dltool.evaluate.result import CheckpointScore, EvalResult, GateOutcome
from dltool.artefacts import scorer_for
from dltool.evaluate.tasks import SCORING_MODULES, ScoreJob, SumsSpec, scoring_session, scoring_tasks, task_gpus
from dltool.storage.fs import Location, open_dataset, open_location
from dltool.storage.manifest import Manifest, manifest_hash
from dltool.storage.stores import with_storage
from dltool.tfenv import task_threads

if TYPE_CHECKING:
    from dltool.config.models import ExperimentConfig

__all__ = ["parse_fail_under", "run_eval", "score_checkpoints"]

SCORE_BATCH = 256
EVAL_FILE = "eval.json"
CONFUSION_PNG = "confusion_matrix.png"
EPOCHS_PNG = "metrics_over_epochs.png"
MISTAKES_PNG = "mistakes.png"
_CLASS_METRICS = ("loss", "accuracy", "macro_f1")
_REGRESSION_METRICS = ("loss", "mae", "rmse", "r2")


@with_storage
def run_eval(
    config: ExperimentConfig,
    checkpoint: str | None = None,
    split: str = "test",
    fail_under: dict[str, float] | None = None,
    progress: bool = True,
    input_uri: str | None = None,
    model_uri: str | None = None,
) -> EvalResult:
    """Score the run's model(s) on a split; returns the scores (what eval.json holds) plus `eval_dir` and `seconds`.

    `checkpoint`: None (the final model, else the best or newest checkpoint), "all" (every
    complete checkpoint, best marked by train.monitor), or comma-separated checkpoint folders
    or .keras files. Raises QualityGateError (exit 3), after writing the outputs, when the
    scored model (the best one, with several) misses a `fail_under` threshold.

    `input_uri`: labelled raw inputs (a class-folder tree, a CSV with the label column) to score
    instead of a split: read with the dataset's own reader and fitted preprocessing into a
    temporary dataset, as predict does; results go to RUN_DIR/eval/input-NAME/.

    `model_uri`: score this artefact instead of the run's models (an exported SavedModel,
    .tflite or .onnx file, or a .keras file); results go to RUN_DIR/eval/SPLIT-NAME/.
    """
    from dltool.evaluate import targets as tg

    started = time.monotonic()
    train = config.train
    if train is None:
        raise ConfigError("the config has no 'train' section: eval needs train.run_dir (or pass --run-dir)")
    dataset = open_dataset(config.dataset.path)
    manifest = trained_on = Manifest.read(dataset)
    kind = manifest.label.kind
    if kind not in ("class", "regression"):
        raise ConfigError(f"{dataset.uri}: the dataset has no labels (ingest label source 'none'): nothing to score against")
    run_dir = open_location(train.run_dir)
    if model_uri is not None and checkpoint is not None:
        raise ConfigError("--model and --checkpoint both name what to score: give one")
    # Before any Spark work: a missing run or model fails at once.
    targets = [tg.model_target(model_uri)] if model_uri else tg.resolve_targets(run_dir, checkpoint)
    eval_name, temp = (f"{split}-{_name_of(targets[0].location)}" if model_uri else split), None
    if input_uri is not None:
        from dltool.evaluate.predict import ingest_raw

        source = open_location(input_uri)
        eval_name, split = f"input-{_name_of(source)}", "test"
        near = run_dir.child("eval", eval_name)
        classes = list(trained_on.label.vocabulary) if kind == "class" else None
        tensorflow = any(scorer_for(t.model, task_gpus(config.spark)).runtime == "tensorflow" for t in targets)
        temp = open_location(ingest_raw(config, source, near, progress, labelled=True, classes=classes,
                                        tensorflow=tensorflow))  # fmt: skip
    try:
        return _score(config, train, trained_on, temp, run_dir, eval_name, targets, split, fail_under, progress, started)
    finally:
        if temp is not None:
            temp.delete()


def _name_of(source: Location) -> str:
    """A folder name for the eval of raw inputs: the input's last path part, made safe."""
    import re

    last = source.path.rstrip("/").rsplit("/", 1)[-1] or "input"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", last)


def _scored_data(config, trained_on: Manifest, temp: Location | None) -> tuple[Location, Manifest]:
    """The dataset to score and its manifest: the training dataset, or `temp` (raw inputs ingested), which must
    have rows and the training data's features."""
    dataset = temp if temp is not None else open_dataset(config.dataset.path)
    manifest = Manifest.read(dataset) if temp is not None else trained_on
    if temp is not None and not manifest.counts.rows:
        from dltool.errors import DataQualityError

        raise DataQualityError(f"{manifest.source}: all {manifest.counts.inputs} inputs were quarantined, nothing to score "
                               "(run `dltool ingest` on them for the reasons)")  # fmt: skip
    if manifest.features != trained_on.features:
        raise ConfigError(f"{dataset.uri}: features {list(manifest.features.shape)} differ from the training data's "
                          f"{list(trained_on.features.shape)}")  # fmt: skip
    return dataset, manifest


def _checked_targets(targets, trained_on: Manifest) -> str:
    """Every model to score checked against the data it was trained on; the training manifest's hash."""
    from dltool.evaluate import targets as tg

    digest = manifest_hash(trained_on)
    for target in targets:
        tg.check_target(target, trained_on, digest)
    return digest


def _score(config, train, trained_on, temp, run_dir, eval_name, targets, split, fail_under, progress,
           started) -> EvalResult:  # fmt: skip
    """Score a split of the dataset, or of `temp` (raw inputs ingested); write the outputs to eval/EVAL_NAME."""
    dataset, manifest = _scored_data(config, trained_on, temp)
    kind = trained_on.label.kind
    rows = split_rows(manifest, split)
    class_names = [str(name) for name in trained_on.label.vocabulary or ()]
    sums = sums_spec(train, kind, class_names)
    relative = {name: rule for name, rule in (fail_under or {}).items() if isinstance(rule, str)}
    gates = check_gates({name: 0.0 if name in relative else rule for name, rule in (fail_under or {}).items()}, kind,
                        class_names, list(sums.top_k))  # fmt: skip
    parent = _parent_target(run_dir, relative) if relative else None
    targets = [*targets, parent] if parent is not None else targets
    digest = _checked_targets(targets, trained_on)

    from dltool.spark.shipping import factory_modules

    scorers = [scorer_for(t.model, task_gpus(config.spark)) for t in targets]
    tensorflow = any(scorer.runtime == "tensorflow" for scorer in scorers)
    # ONNX copies on a local master: scored in this process's threads, with no Spark job (nor session) to wait for
    spark, cores = scoring_session(config, rows, tensorflow, SCORING_MODULES)
    tasks = scoring_tasks(cores, rows, tensorflow)
    if spark is None:
        scorers = [scorer.in_threads(tasks) for scorer in scorers]
    job = ScoreJob(dataset.uri, manifest, split, sums, tuple(factory_modules(config)), tuple(s.uri for s in scorers),
                   SCORE_BATCH, train.cache_mb if len(targets) > 1 else 0)  # fmt: skip
    title = f"eval {split} ({rows:,} rows" + (f", {len(targets)} checkpoints)" if len(targets) > 1 else ")")
    from dltool.evaluate.report import start_loading_plots

    start_loading_plots()
    results, mistakes = score_checkpoints(spark, job, tasks, progress=progress, description=title)
    parent_scores = None
    if parent is not None:  # scored in the same job, on the same rows: the reference of the relative gates
        parent_scores = {"model": parent.model.uri, "metrics": headline(results[-1])}
        targets, scorers, results, mistakes = targets[:-1], scorers[:-1], results[:-1], mistakes[:-1]
        for name, rule in relative.items():
            if name not in parent_scores["metrics"]:
                raise ConfigError(f"--fail-under {name}={rule}: the parent model has no {name} on this split")
            gates[name]["threshold"] = parent_scores["metrics"][name] + float(rule[len("parent"):])

    monitor = _eval_monitor(train.monitor, results[0])
    best = None
    if len(results) > 1:
        from dltool.evaluate.metrics import best_checkpoint

        best = best_checkpoint(results, monitor)
    eval_dir = run_dir.child("eval", eval_name)
    worst = _mistake_rows(dataset, mistakes[best or 0], class_names) if kind == "class" else []
    summary = EvalResult(
        split=split, dataset=manifest.source if temp is not None else dataset.uri, dataset_hash=digest, run_dir=run_dir.uri,
        checkpoints=tuple(CheckpointScore(t.location.uri, t.label, t.epoch, result, scorer.runtime, scorer.note)
                          for t, scorer, result in zip(targets, scorers, results)),
        best=best, monitor=monitor, fail_under={name: gate["threshold"] for name, gate in gates.items()},
        gates=tuple(apply_gates(gates, results[best or 0])), eval_dir=eval_dir.uri, seconds=0.0,
        quarantined=manifest.counts.quarantined if temp is not None else 0,
        mistakes=tuple({k: m[k] for k in ("key", "true", "predicted", "probability")} for m in worst),
        dataset_version=None if temp is not None else manifest.version, parent=parent_scores,
    )  # fmt: skip
    _write_outputs(eval_dir, summary, class_names)
    if worst:
        from dltool.evaluate import report

        report.mistakes_png(worst, manifest.reader, manifest.feature_names, eval_dir.child(MISTAKES_PNG).uri,
                            manifest.vocabulary)
    _track(run_dir, eval_name, headline(summary.scored.metrics), eval_dir)
    summary = replace(summary, seconds=round(time.monotonic() - started, 1))
    missed = [gate for gate in summary.gates if not gate.passed]
    if missed:
        raise QualityGateError(
            f"quality gate missed on the {split} split by {summary.scored.name}: "
            + "; ".join(gate.describe() for gate in missed),
            summary,
        )
    return summary


def _parent_target(run_dir: Location, relative: dict[str, str]):
    """The model the run was warm-started from (run.json's parent), for `--fail-under NAME=parent-0.01`."""
    from dltool.evaluate import targets as tg
    from dltool.train import checkpoints as ckpt

    parent = (ckpt.read_json(run_dir.child(ckpt.RUN_FILE)) or {}).get("parent")
    if not parent:
        name, rule = next(iter(relative.items()))
        raise ConfigError(f"--fail-under {name}={rule}: {run_dir.uri} has no parent model (train it with --warm-start)")
    return tg.resolve_targets(run_dir, parent["model"])[0]


def _track(run_dir: Location, eval_name: str, figures: dict, eval_dir: Location) -> None:
    """Metrics (as EVAL_NAME_METRIC), eval.json and plots into the MLflow run the training recorded, if any."""
    from dltool.tracking import Tracker
    from dltool.train import checkpoints as ckpt

    tracker = Tracker.reopen((ckpt.read_json(run_dir.child(ckpt.RUN_FILE)) or {}).get("mlflow"))
    if tracker is not None:
        tracker.log_metrics(figures, prefix=f"{eval_name}_")
        tracker.log_files(eval_dir, f"eval/{eval_name}")


def parse_fail_under(items: list[str] | None) -> dict[str, float | str]:
    """`--fail-under NAME=VALUE` options as {name: threshold}; the names are checked by run_eval. A value
    `parent`, `parent-0.01` or `parent+0.05` (also written NAME>=parent-0.01) is relative to the score of the
    run's parent (the model it was warm-started from) on the same split, kept as the text "parent-0.01"."""
    plain, relative = [], {}
    for item in items or ():
        name, sep, value = item.replace(">=", "=", 1).replace("<=", "=", 1).partition("=")
        value = value.replace(" ", "")
        if sep and name.strip() and value.startswith("parent"):
            offset = (value[len("parent"):] or "+0").replace("--", "+").replace("+-", "-")  # parent-$X with X < 0
            try:
                number = float(offset) if offset[0] in "+-" else math.nan
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise ConfigError(f"--fail-under {item!r}: expected METRIC=parent-NUMBER, e.g. accuracy=parent-0.01")
            relative[name.strip()] = f"parent{number:+g}"
        else:
            plain.append(item.replace(">=", "=", 1).replace("<=", "=", 1))
    return {**parse_metric_values("--fail-under", plain, "accuracy=0.9"), **relative}


def parse_metric_values(option: str, items: list[str] | None, example: str, minimum: float = -math.inf) -> dict[str, float]:
    """Repeated `OPTION METRIC=NUMBER` options as {metric: number}; one ConfigError for a malformed one."""
    values: dict[str, float] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name.strip() or not math.isfinite(number) or number < minimum:
            bound = f" >= {minimum:g}" if math.isfinite(minimum) else ""
            raise ConfigError(f"{option} {item!r}: expected METRIC=NUMBER{bound}, e.g. {option} {example}")
        values[name.strip()] = number
    return values


# ---------------------------------------------------------------------------------------- driver checks


def split_rows(manifest: Manifest, split: str) -> int:
    splits = manifest.splits
    if split not in splits:
        raise ConfigError(f"split '{split}' is not in the dataset; it has: {', '.join(splits) or 'no splits'} (--split)")
    rows = splits[split].rows
    if not rows:
        having = [name for name, entry in splits.items() if entry.rows]
        raise ConfigError(f"split '{split}' has 0 rows: nothing to score; choose one of {', '.join(having)} (--split)")
    return rows


def sums_spec(train, kind: str, class_names: list[str]) -> SumsSpec:
    """How a task builds its metric sums: the class names and top-k list, or the regression loss (as in training)."""
    from dltool.train.metrics import loss_name, resolve_metrics

    if kind == "regression":
        return SumsSpec("regression", loss=loss_name(train.loss, kind))
    metrics = resolve_metrics(train.metrics, kind, len(class_names))
    top_k = tuple(int(name.split("_")[1]) for name in metrics if name.startswith("top_"))
    return SumsSpec("classification", tuple(class_names), top_k)


def _metric_names(kind: str, class_names: list[str], top_k: list[int]) -> list[str]:
    """Every headline() name a result of this task can have."""
    if kind == "regression":
        return ["loss", "mae", "mse", "rmse", "r2"]
    names = ["loss", "accuracy", *(f"top_{k}_accuracy" for k in top_k)]
    names += [f"{average}_{m}" for average in ("macro", "weighted") for m in ("precision", "recall", "f1")]
    return names + ["ece"] + (["roc_auc", "pr_auc"] if len(class_names) == 2 else [])


def check_gates(fail_under: dict[str, float], kind: str, class_names: list[str], top_k: list[int]) -> dict:
    valid = _metric_names(kind, class_names, top_k)
    gates = {}
    for name, threshold in fail_under.items():
        if name not in valid:
            task = "classification" if kind == "class" else "regression"
            raise ConfigError(f"--fail-under {name}: unknown metric for this {task} model; use one of {', '.join(valid)}")
        if isinstance(threshold, str):  # a relative gate, resolved by run_eval only
            raise ConfigError(f"--fail-under {name}={threshold}: a gate against the parent model is for `dltool eval` "
                              "of a warm-started run")  # fmt: skip
        gates[name] = {"threshold": float(threshold), "at_least": higher_is_better(name)}
    return gates


def _eval_monitor(monitor: str, result: dict) -> str:
    """train.monitor as an eval metric (val_accuracy -> accuracy); loss when eval has no such figure."""
    name = monitor.removeprefix("val_")
    return name if name in headline(result) else "loss"


def apply_gates(gates: dict, result: dict) -> list[GateOutcome]:
    figures = headline(result)
    outcome = []
    for name, gate in gates.items():
        value = figures.get(name)
        at_least = gate["at_least"]
        passed = value is not None and (value >= gate["threshold"] if at_least else value <= gate["threshold"])
        outcome.append(GateOutcome(name, ">=" if at_least else "<=", gate["threshold"], value, passed))
    return outcome


# ---------------------------------------------------------------------------------------------- Spark


def score_checkpoints(spark, job: ScoreJob, tasks: int, progress: bool = True,
                      description: str = "eval") -> tuple[list[dict], list[list[dict]]]:  # fmt: skip
    """Score every model of `job` on its split in one Spark job of `tasks` tasks (with `spark` None: in `tasks`
    threads of this process): one compute() result per model, and per model its most confidently wrong rows
    (classification; see `_worst`).

    `job` holds picklable values only (`ScoreJob`).
    """
    from dltool.evaluate.metrics import from_json
    from dltool.shards.feed import plan_shares
    from dltool.spark.local import map_in_threads
    from dltool.spark.progress import spark_progress

    shares = plan_shares(job.dataset, job.manifest, job.split, tasks)
    payload = [(rank, [[u.file, u.row_group, u.start, u.stop] for u in share]) for rank, share in enumerate(shares)]
    if spark is None:
        records = map_in_threads(functools.partial(_score_task, job), payload, progress, description)
    else:
        sc = spark.sparkContext
        with map_errors("scoring"), spark_progress(spark, description, enabled=progress):
            records = sc.parallelize(payload, len(payload)).mapPartitions(functools.partial(_score_task, job)).collect()
    failures = [ErrorRecord.from_json(record["error"]) for record in records if "error" in record]
    if failures:
        # A config mismatch (exit 2) explains a load failure (exit 1): it is the one to show.
        min(failures, key=lambda failure: failure.exit_code == 1).raise_("scoring failed")
    merged: list = [None] * len(job.models)
    mistakes: list[list[dict]] = [[] for _ in job.models]
    for record in sorted(records, key=lambda record: (record["model"], record["rank"])):
        sums = from_json(record["sums"])
        index = record["model"]
        merged[index] = sums if merged[index] is None else merged[index].merge(sums)
        mistakes[index] = _worst([*mistakes[index], *record.get("mistakes", [])])
    if any(sums is None for sums in merged):
        raise DltoolError("scoring returned no result for some models: the split's shares were all empty")
    return [sums.compute() for sums in merged], mistakes


MISTAKES = 16  # the most confidently wrong rows kept per model for mistakes.png


def _worst(mistakes: list[dict]) -> list[dict]:
    """The MISTAKES most confident wrong predictions, highest probability first (ties: by place, stable)."""
    return sorted(mistakes, key=lambda m: (-m["probability"], m["file"], m["row_group"], m["row"]))[:MISTAKES]


def _score_task(job: ScoreJob, partition: Iterator[tuple[int, list]]) -> Iterator[dict]:
    """Runs in a Spark task: each model loaded once, the task's share fed through it; one record per model.

    Errors come back as records ({"error": ErrorRecord}) so the driver can show one line with
    the right exit code instead of a Python traceback wrapped in a Java one.
    """
    for rank, units in partition:
        if not units:
            continue
        try:
            yield from _score_share(job, rank, units)
        except Exception as e:  # noqa: BLE001 - TensorFlow and Keras raise many types
            yield {"error": ErrorRecord.from_exception(e).to_json()}


def _score_share(job: ScoreJob, rank: int, units: list) -> Iterator[dict]:
    from dltool.evaluate.metrics import ClassificationSums, RegressionSums
    from dltool.evaluate.targets import check_signature
    from dltool.shards.feed import FeedUnit, ShardFeed

    from dltool.artefacts import load_predictor, task_tensorflow_for

    tf = task_tensorflow_for(job.models)
    spec = job.sums
    units = [FeedUnit(*u) for u in units]
    feed = ShardFeed(job.dataset, job.manifest, units, cache_mb=job.cache_mb)
    for index, uri in enumerate(job.models):
        model = load_predictor(tf, uri, job.modules, task_threads())
        check_signature(uri, model.shape, model.dtype, model.outputs, job.manifest)
        predict = model.predict
        classify = spec.task == "classification"
        sums = ClassificationSums(list(spec.class_names), list(spec.top_k)) if classify else RegressionSums(spec.loss)
        mistakes, seen = [], 0
        for x, y in feed.one_pass(job.batch):
            outputs = predict(x)
            sums.update(y, outputs)
            if classify:
                mistakes = _worst(mistakes + _wrong(x, y, outputs, seen, units))
            seen += len(outputs)
        yield {"model": index, "rank": rank, "sums": sums.to_json(), "mistakes": mistakes}
        del predict, model
        if tf is not None:
            import keras

            keras.backend.clear_session()


def _wrong(x, y, probabilities, first: int, units) -> list[dict]:
    """The wrong predictions of a batch whose first row is row `first` of the share, each with where it is stored
    and its features (mistakes.png shows them; reading them back from the shards costs a row group each)."""
    import numpy as np

    y = np.asarray(y).reshape(-1)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y)
    if not len(wrong):
        return []
    confidence = probabilities[wrong, predicted[wrong]]
    wrong = wrong[np.argsort(-confidence, kind="stable")[:MISTAKES]]
    ends = np.cumsum([u.rows for u in units])
    found = []
    for i in wrong:
        position = first + int(i)
        at = int(np.searchsorted(ends, position, side="right"))
        unit, offset = units[at], position - (int(ends[at]) - units[at].rows)
        found.append({"probability": float(probabilities[i, predicted[i]]), "true": int(y[i]), "predicted": int(predicted[i]),
                      "file": unit.file, "row_group": unit.row_group, "row": unit.start + offset,
                      "features": np.array(x[i])})  # fmt: skip
    return found


# -------------------------------------------------------------------------------------------- outputs


def _mistake_rows(dataset: Location, mistakes: list[dict], class_names: list[str]) -> list[dict]:
    """The most confidently wrong rows with their class names and features, and their keys read from the shards
    (one small column per row group)."""
    import pyarrow.parquet as pq

    keys = {}
    for place in dict.fromkeys((m["file"], m["row_group"]) for m in mistakes):
        shard = dataset.child(*place[0].split("/"))
        with shard.fs.open_input_file(shard.path) as f:
            keys[place] = pq.ParquetFile(f).read_row_group(place[1], columns=["key"]).column("key")
    return [{"key": keys[m["file"], m["row_group"]][m["row"]].as_py(), "true": class_names[m["true"]],
             "predicted": class_names[m["predicted"]], "probability": round(m["probability"], 6),
             "features": m["features"]} for m in mistakes]  # fmt: skip


def _write_outputs(eval_dir: Location, summary: EvalResult, class_names: list[str]) -> None:
    """eval.json, the confusion matrix of the scored (or best) model, and metrics over epochs for several."""
    from dltool.errors import StorageError
    from dltool.evaluate import report
    from dltool.train.checkpoints import write_json

    try:
        eval_dir.fs.create_dir(eval_dir.path, recursive=True)
        for name in (CONFUSION_PNG, EPOCHS_PNG, MISTAKES_PNG):  # a plot of an earlier eval must not pass for this one's
            eval_dir.child(name).delete()
        write_json(eval_dir.child(EVAL_FILE), summary.eval_json())
    except OSError as e:
        raise StorageError(f"{eval_dir.uri}: cannot write the eval results: {e}") from e
    entries = summary.checkpoints
    chosen = summary.scored.metrics
    if chosen["task"] == "classification":
        report.confusion_png(chosen["confusion_matrix"], class_names, eval_dir.child(CONFUSION_PNG).uri)
    dated = [(entry.epoch, headline(entry.metrics)) for entry in entries if entry.epoch is not None]
    if len(entries) > 1 and len(dated) > 1:
        names = _CLASS_METRICS if chosen["task"] == "classification" else _REGRESSION_METRICS
        names = list(dict.fromkeys([*names, summary.monitor]))
        values = {name: [figures.get(name) for _, figures in dated] for name in names}
        report.metric_over_epochs_png([epoch for epoch, _ in dated], values, eval_dir.child(EPOCHS_PNG).uri)
