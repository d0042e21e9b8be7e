"""`dltool predict`: batch inference on Spark over a dataset split or raw inputs, written as Parquet.

Raw inputs (image or audio folders, CSV files) are ingested first, with the experiment's own
reader config, into a temporary dataset: decoding and preprocessing are exactly those of
training (for CSV, the training dataset's fitted `_preprocess/` pipeline is applied, not
refitted), and bad records are quarantined the same way (their rows go to the output's `_errors/`).
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Iterator

from dltool.artefacts import Scorer, scorer_for
from dltool.config.models import ExperimentConfig, SplitSettings
from dltool.errors import ConfigError, DataQualityError, ErrorRecord, InputNotFoundError, map_errors
from dltool.evaluate.tasks import PredictJob, task_gpus
from dltool.config.redaction import redact
from dltool.storage.commit import StagedFolder, unfinished
from dltool.storage.ownership import OutputLock, check_replaceable, protected_paths
from dltool.storage.fs import Location, open_dataset, open_location
from dltool.storage.manifest import MANIFEST, SUCCESS, Manifest, manifest_hash
from dltool.storage.stores import with_storage

PREDICTIONS = "_predictions.json"


@with_storage
def run_predict(
    config: ExperimentConfig,
    input_uri: str,
    output_uri: str,
    checkpoint: str | None = None,
    split: str = "test",
    overwrite: bool = False,
    progress: bool = True,
    keep: list[str] = (),
    model_uri: str | None = None,
) -> dict:
    """Predict every row of a dataset split, or every record of a raw input; returns the summary.

    `model_uri`: predict with this model instead of the run's: a .keras, .tflite or .onnx file, a
    SavedModel folder, or a registered MLflow model (`models:/NAME@ALIAS`, `models:/NAME/VERSION`).

    Raw inputs keep their label (`label`, `label_name` columns) when they carry the one the model
    was trained on: every file in a known class folder, or the table's label column. `keep`:
    table columns copied into the output (ids), from raw rows or a dataset's passthrough columns.
    """
    if model_uri is not None and checkpoint is not None:
        raise ConfigError("--model and --checkpoint both name the model: give one")
    if config.train is None and model_uri is None:
        raise ConfigError("the config has no 'train' section: no run to predict with (or pass --model)")
    request = _Request(config, input_uri, output_uri, checkpoint, split, overwrite, progress, list(dict.fromkeys(keep)))
    if model_uri is None or not model_uri.startswith(("models:/", "runs:/")):
        return request.run(model_uri)
    # Downloaded beside the output, where every executor can read it, for the length of the run.
    staged = open_location(output_uri).sibling(f".model-{uuid.uuid4().hex[:8]}.keras")
    try:
        _stage_registered_model(config, model_uri, staged)
        return request.run(staged.uri)
    finally:
        staged.delete()


class _Request:
    """One predict: the model checked against the training data, the output cleared, raw inputs ingested into a
    temporary dataset (removed after), the rows predicted on Spark into a staged output."""

    def __init__(self, config, input_uri, output_uri, checkpoint, split, overwrite, progress, keep: list[str]):
        self.config, self.checkpoint, self.split, self.overwrite = config, checkpoint, split, overwrite
        self.progress, self.keep, self.started = progress, keep, time.monotonic()
        self.input_uri, self.source, self.output = input_uri, open_dataset(input_uri), open_location(output_uri)
        if self.source.version is not None and not self.source.child(MANIFEST).exists():
            self.source = open_location(input_uri)  # raw inputs whose name ends in @N, not a dataset's version
        self.trained_on = Manifest.read(open_dataset(config.dataset.path))

    def run(self, model_uri: str | None) -> dict:
        target = self._target(model_uri)
        scorer = scorer_for(target.model, task_gpus(self.config.spark))
        self._clear_output()
        raw = not self.source.child(MANIFEST).exists()
        dataset_uri, label_column = self._ingested(scorer) if raw else (self.source.uri, None)
        try:
            dataset = open_dataset(dataset_uri) if not raw else open_location(dataset_uri)
            manifest = Manifest.read(dataset)
            split = self._checked(dataset, manifest, raw)
            return self._predicted(dataset, manifest, split, target, scorer, raw, label_column)
        finally:
            if raw:
                open_location(dataset_uri).delete()

    def _target(self, model_uri: str | None):
        """The one model to predict with, checked against the data it was trained on."""
        from dltool.evaluate.targets import check_target, model_target, resolve_targets

        if model_uri is not None:
            targets = [model_target(model_uri)]
        else:
            targets = resolve_targets(open_location(self.config.train.run_dir), self.checkpoint)
        if len(targets) != 1:
            raise ConfigError("predict takes one model: pass --checkpoint PATH (or none for the run's final/best model)")
        check_target(targets[0], self.trained_on, manifest_hash(self.trained_on))
        return targets[0]

    def _clear_output(self) -> None:
        output = self.output
        if output.exists():
            check_replaceable(output, "--output", [*protected_paths(self.config), self.input_uri])
            if not self.overwrite and not unfinished(output):  # a crashed predict's output on a store is replaced
                raise ConfigError(f"{output.uri}: output exists; pass --overwrite to replace it")
            output.delete()

    def _ingested(self, scorer: Scorer) -> tuple[str, str | None]:
        """Raw inputs as a temporary dataset beside the output, read as the experiment's reader reads them;
        and the table's label column when a table's rows carry the model's label."""
        from dltool.readers.base import reader_for

        config, trained_on, tensorflow = self.config, self.trained_on, scorer.runtime == "tensorflow"
        labelled = _raw_inputs_labelled(config, self.source, trained_on, tensorflow)
        reader = reader_for(config.ingest)
        files = reader.labels_from_paths()
        classes = list(trained_on.label.vocabulary) if labelled and trained_on.label.kind == "class" else None
        # A table's label goes through as it is: a row to predict may have none yet.
        label_column = reader.label_column() if labelled and not files else None
        dataset_uri = ingest_raw(config, self.source, self.output, self.progress, labelled=labelled and files,
                                 classes=classes, keep=self.keep, carry_label=label_column is not None,
                                 tensorflow=tensorflow)  # fmt: skip
        return dataset_uri, label_column

    def _checked(self, dataset: Location, manifest: Manifest, raw: bool) -> str:
        """The split to predict, once the dataset has rows, the columns to keep and the training data's features."""
        split = "test" if raw else self.split
        if raw and not manifest.counts.rows:
            raise DataQualityError(f"{self.source.uri}: all {manifest.counts.inputs} inputs were quarantined, nothing "
                                   "to predict (run `dltool ingest` on them for the reasons)")  # fmt: skip
        if not raw and split not in manifest.splits:
            raise ConfigError(f"split {split!r} is not in {dataset.uri} (it has: {', '.join(manifest.splits)})")
        missing = [c for c in self.keep if c not in manifest.passthrough]
        if missing:
            raise ConfigError(f"--keep {', '.join(missing)}: not a column of {'the raw rows' if raw else dataset.uri} "
                              f"(a dataset keeps only its passthrough columns: {list(manifest.passthrough)})")  # fmt: skip
        if manifest.features != self.trained_on.features:
            features, trained = manifest.features, self.trained_on.features
            raise ConfigError(
                f"{dataset.uri}: features {list(features.shape)} {features.dtype} differ from "
                f"the training data's {list(trained.shape)} {trained.dtype}"
            )
        return split

    def _predicted(self, dataset: Location, manifest: Manifest, split: str, target, scorer: Scorer, raw: bool,
                   label_column: str | None) -> dict:  # fmt: skip
        """The predictions, staged and committed with their summary (`_predictions.json`) and the raw inputs' errors."""
        output = self.output
        with OutputLock(output), StagedFolder(output, staging=output.sibling(f".tmp-{uuid.uuid4().hex[:8]}"),
                                              kind="predictions") as staged:  # fmt: skip
            staging = staged.location
            rows, scorer = _predict_rows(self.config, dataset, manifest, self.trained_on, split, scorer, staging,
                                         self.progress, self.keep, label_column)  # fmt: skip
            if raw and dataset.child("_errors").exists():
                staging.fs.move(dataset.child("_errors").path, staging.child("_errors").path)
            summary = {
                "status": "completed", "output": output.uri, "input": self.source.uri, "raw_input": raw,
                "split": None if raw else split, "dataset_version": None if raw else manifest.version,
                "model": target.model.uri, "rows": rows, "runtime": scorer.runtime, "runtime_note": scorer.note,
                "quarantined": manifest.counts.quarantined if raw else 0,
                "seconds": round(time.monotonic() - self.started, 1),
            }  # fmt: skip
            staging.child(PREDICTIONS).write_bytes(json.dumps(redact(summary), indent=2).encode())
            staging.child(SUCCESS).write_bytes(b"")  # last: on object stores it alone says complete
            staged.commit()
        return summary


def ingest_raw(config: ExperimentConfig, source: Location, near: Location, progress: bool,
               labelled: bool = False, classes: list[str] | None = None, keep: list[str] = (),
               carry_label: bool = False, tensorflow: bool = True) -> str:  # fmt: skip
    """Ingest raw inputs with the experiment's reader into a temporary dataset next to `near`.

    `labelled` keeps each input's label (eval --input), indexed by the training data's `classes`
    (a label outside them is quarantined); else the inputs are read unlabelled. `keep`: table
    columns carried into the shards as passthrough (predict --keep); `carry_label` carries a
    table's label column that way too, unchecked (predict: a row to score may have no label yet).
    `tensorflow`: whether the scoring that follows needs TensorFlow (a model without its ONNX copy).
    """
    from dltool.ingest.run import run_ingest

    if config.ingest is None:
        raise ConfigError("predicting on raw inputs needs the config's 'ingest' section (how to read them)")
    from dltool.readers.base import reader_for

    temp = near.sibling(f".ingest-{uuid.uuid4().hex[:8]}")
    reader = reader_for(config.ingest)
    # Every record lands in one split, unaugmented (and unlabelled for predict): they are scored as they are.
    ingest = reader.for_raw_inputs(source.uri, labelled=labelled)
    # Table rows get the training data's fitted features (vocabularies, imputation, scaling), never refitted ones.
    preprocess = _training_preprocess(config) if reader.kind == "table" else None
    if keep and reader.labels_from_paths():
        raise ConfigError(f"--keep {', '.join(keep)}: only table inputs have columns to keep")
    if preprocess is not None and (keep or carry_label):
        fitted = json.loads(open_location(preprocess).read_bytes())
        label = reader.label_column()
        roles = {*fitted.get("numeric", ()), *fitted.get("categorical", ()), *fitted.get("vectors", ()),
                 *fitted.get("dates", ()), *fitted.get("words", ()), label,
                 getattr(config.ingest, "text_column", None)}  # fmt: skip
        if any(c in roles for c in keep):
            raise ConfigError(f"--keep {', '.join(c for c in keep if c in roles)}: a feature or label column; "
                              "--keep copies other columns (ids, notes)")  # fmt: skip
        carried = [*keep, *([label] if carry_label else [])]
        ingest = ingest.model_copy(update={"passthrough": list(dict.fromkeys([*ingest.passthrough, *carried]))})
    # Bad records are quarantined and counted; they never stop the predictions for the rest.
    dataset = config.dataset.model_copy(update={"path": temp.uri, "max_bad_fraction": 1.0,
                                                "split": SplitSettings(train=0.0, val=0.0, test=1.0)})  # fmt: skip
    raw_config = config.model_copy(update={"ingest": ingest, "dataset": dataset})
    from dltool.ingest.run import local_file_tasks
    from dltool.spark.session import spark_session

    # Scoring follows: its modules warm up in the workers while the inputs are ingested (`_scoring_modules`). Files
    # (images, audio) are ingested and scored in RDD jobs only: no SQL session (`ingest_session` says why). On a
    # local master, files in local folders and an ONNX copy need no session at all (forked processes, then threads).
    if tensorflow or not local_file_tasks(raw_config, source, temp):
        spark_session(config.spark, warm=(*reader_for(ingest).task_imports(), *_scoring_modules(config, tensorflow)),
                      warm_tensorflow=int(tensorflow), sql=reader.kind != "file")  # fmt: skip
    run_ingest(raw_config, overwrite=True, progress=progress, preprocess=preprocess, vocabulary=classes)
    return temp.uri


def _scoring_modules(config: ExperimentConfig, tensorflow: bool) -> tuple[str, ...]:
    """What a session's workers import for the scoring that follows: nothing where this process scores in its own
    threads (an ONNX copy on a local master: `spark/local.py`)."""
    from dltool.evaluate.tasks import PREDICT_MODULES, threads_here

    return () if threads_here(config.spark, tensorflow) else PREDICT_MODULES


def _raw_inputs_labelled(config: ExperimentConfig, source: Location, trained_on: Manifest, tensorflow: bool) -> bool:
    """Whether raw inputs carry the label the model learned: every file's label is a known class
    (class folders), or the table has the label column."""
    from dltool.readers.base import reader_for

    if config.ingest is None or trained_on.label.kind is None:
        return False
    reader = reader_for(reader_for(config.ingest).for_raw_inputs(source.uri, labelled=True))
    files, _ = reader.inputs()
    if not files:
        return False
    if reader.labels_from_paths():
        classes = set(trained_on.label.vocabulary or ())
        return all(reader.label_of(f.relpath) in classes for f in files)
    from dltool.spark.session import spark_session
    from dltool.spark.paths import require_s3a, spark_path

    # the session the inputs are ingested (and on a cluster scored) in
    spark = spark_session(config.spark, warm=_scoring_modules(config, tensorflow), warm_tensorflow=int(tensorflow))
    require_s3a(spark, source)
    paths = [spark_path(source.uri, f.path) for f in files]
    return reader.label_column() in reader.source_columns(spark, paths)


def _stage_registered_model(config: ExperimentConfig, uri: str, staged: Location) -> None:
    """The registered model's .keras file, downloaded from MLflow, written to `staged`."""
    import tempfile
    from pathlib import Path

    from dltool.tracking import mlflow_model_path

    tracking = config.tracking.mlflow
    with tempfile.TemporaryDirectory(prefix="dltool-mlflow-") as folder:
        local = Path(mlflow_model_path(uri, folder, tracking.tracking_uri if tracking else None))
        staged.fs.create_dir(staged.path.rsplit("/", 1)[0], recursive=True)
        staged.write_bytes(local.read_bytes())


def _number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _training_preprocess(config: ExperimentConfig) -> str:
    """The URI of the training dataset's fitted table preprocessing."""
    from dltool.ingest.tables import PREPROCESS

    dataset = open_dataset(config.dataset.path)
    if not dataset.child(PREPROCESS).exists():
        older = dataset.child("_preprocess").exists()  # the Spark ML pipeline older versions saved
        older = " (written by an older dltool: rerun `dltool ingest --overwrite`)" if older else ""
        raise InputNotFoundError(f"{dataset.uri}: no {PREPROCESS}, the training data's fitted preprocessing{older}")
    return dataset.child(PREPROCESS).uri


def _predict_rows(config, dataset: Location, manifest: Manifest, trained_on: Manifest, split: str, scorer: Scorer,
                  output: Location, progress: bool, keep: list[str], label_column: str | None) -> tuple[int, Scorer]:  # fmt: skip
    """The split's rows predicted into parts of `output` in Spark tasks (on a local master with an ONNX copy: in
    this process's threads); the rows and the scorer, its note saying where it ran."""
    from dltool.evaluate.tasks import PREDICT_MODULES, scoring_session, scoring_tasks
    from dltool.shards.feed import plan_shares
    from dltool.spark.local import map_in_threads
    from dltool.spark.progress import spark_progress
    from dltool.spark.shipping import factory_modules

    rows = manifest.splits[split].rows if split in manifest.splits else 0  # plan_shares says why 0
    tensorflow = scorer.runtime == "tensorflow"
    spark, cores = scoring_session(config, rows, tensorflow, PREDICT_MODULES)
    tasks = scoring_tasks(cores, rows, tensorflow)
    if spark is None:
        scorer = scorer.in_threads(tasks)
    shares = plan_shares(dataset.uri, manifest, split, tasks)
    payload = [(rank, [[u.file, u.row_group, u.start, u.stop] for u in share]) for rank, share in enumerate(shares)]
    job = PredictJob(dataset.uri, manifest, scorer.uri, output.uri, tuple(factory_modules(config)),
                     trained_on.label.vocabulary, trained_on.label.kind, tuple(keep), label_column)  # fmt: skip
    if spark is None:
        records = map_in_threads(functools.partial(_predict_task, job), payload, progress, "predict")
    else:
        with map_errors("predict"), spark_progress(spark, "predict", enabled=progress):
            records = (
                spark.sparkContext.parallelize(payload, len(payload))
                .mapPartitions(functools.partial(_predict_task, job))
                .collect()
            )
    failures = [ErrorRecord.from_json(r["error"]) for r in records if "error" in r]
    if failures:
        failures[0].raise_("predict failed")
    return sum(r["rows"] for r in records), scorer


def _predict_task(job: PredictJob, partition: Iterator[tuple[int, list]]) -> Iterator[dict]:
    """Runs in a Spark task: load the model once, predict the task's share, write one Parquet part."""
    for rank, units in partition:
        if not units:
            continue
        try:
            yield {"rows": _predict_share(job, rank, units)}
        except Exception as e:  # noqa: BLE001 - TensorFlow and Keras raise many types
            yield {"error": ErrorRecord.from_exception(e).to_json()}


def _predict_share(job: PredictJob, rank: int, units: list) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dltool.artefacts import load_predictor, task_tensorflow_for
    from dltool.shards.codec import numpy_array, plain_array
    from dltool.shards.feed import FeedUnit, ShardFeed
    from dltool.tfenv import task_threads

    tf = task_tensorflow_for([job.model])  # before keras, which imports TensorFlow loudly
    manifest = job.manifest
    labelled = manifest.label.kind is not None
    units = [FeedUnit(*u) for u in units]
    feed = ShardFeed(job.dataset, manifest, units, cache_mb=0, with_labels=labelled)
    predict = load_predictor(tf, job.model, job.modules, task_threads()).predict
    outputs, labels = [], []
    for x, y in feed.one_pass(256):
        outputs.append(predict(x))
        if y is not None:
            labels.append(y)
    dataset = open_dataset(job.dataset)
    carried = [job.label_column] if job.label_column else []
    parts = []
    for u in units:
        with dataset.fs.open_input_file(dataset.child(u.file).path) as f:
            columns = list(dict.fromkeys(["key", *job.keep, *carried]))
            parts.append(pq.ParquetFile(f).read_row_group(u.row_group, columns=columns).slice(u.start, u.stop - u.start))
    kept = pa.concat_tables(parts)
    columns = {"key": kept.column("key").combine_chunks()}
    values = np.concatenate(outputs).astype(np.float32)
    if job.kind == "class":
        predicted = values.argmax(axis=1).astype(np.int32)
        vocabulary = np.asarray(job.vocabulary, dtype=object)
        columns["predicted"] = numpy_array(predicted)
        columns["predicted_name"] = plain_array(vocabulary[predicted].tolist(), pa.string())
        offsets = numpy_array(np.arange(len(values) + 1, dtype=np.int32) * np.int32(values.shape[1]))
        columns["probabilities"] = pa.ListArray.from_arrays(offsets, numpy_array(values.reshape(-1)))
    else:
        columns["value"] = numpy_array(values.reshape(-1))
    columns.update({c: kept.column(c).combine_chunks() for c in job.keep})
    if carried:  # a raw table's label, as it is: its class index, or null when blank or not a known class
        names = [None if v is None or not v.strip() else v.strip() for v in kept.column(carried[0]).to_pylist()]
        if job.kind == "class":
            index = {name: i for i, name in enumerate(job.vocabulary)}
            columns["label"] = plain_array([index.get(n) for n in names], pa.int32())
            columns["label_name"] = plain_array(names, pa.string())
        else:
            columns["label"] = plain_array([_number(n) for n in names], pa.float32())
    if labels:
        label = np.concatenate(labels)
        columns["label"] = numpy_array(label)
        if job.kind == "class":
            columns["label_name"] = plain_array(np.asarray(job.vocabulary, dtype=object)[label].tolist(), pa.string())
    target = open_location(job.output).child(f"part-{rank:05d}.parquet")
    with target.fs.open_output_stream(target.path) as f:
        pq.write_table(pa.table(columns), f, compression="zstd")
    return len(values)
