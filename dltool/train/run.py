"""`dltool train` on the driver: check everything, launch the barrier stage, retry from checkpoints."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Self

import dltool
from dltool.config.loader import config_hash
from dltool.config.models import ExperimentConfig, TrainSettings
from dltool.errors import ConfigError, DltoolError, ErrorRecord
from dltool.train.barrier import attempt_logs
from dltool.storage.fs import Location, open_dataset, open_location
from dltool.storage.manifest import Manifest, manifest_hash, preprocessing_hash
from dltool.storage.ownership import OutputLock, is_owned, mark, protected_paths
from dltool.storage.stores import storage_settings, with_storage
from dltool.train import checkpoints as ckpt
from dltool.train.job import TrainJob
from dltool.train.metrics import loss_name, resolve_metrics
from dltool.train.sizing import sized

# Fields that may change between a run and its resume without invalidating its checkpoints.
RESUMABLE_CHANGES = {"epochs", "workers", "max_retries", "timeout_s", "run_dir", "early_stopping", "cache_mb", "final",
                     "steps_per_execution"}  # fmt: skip


@dataclass
class Plan:
    """What every worker needs, computed once on the driver (plain values only)."""

    workers: int
    global_batch: int
    per_worker_batch: int
    steps_per_epoch: int
    train_rows: int
    val_rows: int
    class_weights: list[float] | None
    train_units: list
    val_units: list | None
    global_batches: bool  # every worker holds the train split: W workers see one worker's batches


@with_storage
def run_training(
    config: ExperimentConfig, resume: bool = False, overwrite: bool = False, progress: bool = True,
    fault: dict | None = None, on_epoch=None, sharing: int = 1, quiet: bool = False, check_model: bool = True,
    warm_start: str | None = None, reuse_workers: bool = False, scoring_copies: bool = True,
) -> dict:
    """Train the config's model on its dataset; returns the run summary (raises DltoolError on failure).

    `fault` is a test-only hook, never part of a config: `{"rank", "epoch", "attempts"}` makes
    that worker raise after its first step of that epoch on those attempts (0 = the first); with
    `"kind": "hang"` it stops answering instead, and the workers' watchdogs end the attempt.
    `on_epoch(event)` sees each finished epoch's event (the tuner reports it to its pruner); `sharing`
    runs share the cluster at once (the tuner's parallel trials), so local workers take a share of the cores;
    `quiet` prints nothing (the tuner shows its own table); `check_model=False` skips building the model in a
    child process first (a tuner's trial: Spark is up, and the worker reports a bad model with the same error).
    `warm_start`: a run dir, checkpoint folder or .keras file whose weights the model starts from (the same
    preprocessing: another version of this dataset); run.json names it as the run's parent.
    `reuse_workers`: a run of one CPU worker takes the worker process an earlier such run left in its Spark Python
    worker, TensorFlow loaded, and leaves its own for the next (the tuner's trials, Spark ML fits; see train.barrier).
    `scoring_copies=False`: the final model is model.keras alone, without its SavedModel and ONNX copy (a tuner's
    trial: `dltool train --from-tune` trains the model that is kept; the copies took 0.7 s of an 8 s trial).
    """
    started = time.monotonic()
    if config.train is None:
        raise ConfigError("the config has no 'train' section: nothing to train")
    dataset = open_dataset(config.dataset.path)
    manifest = Manifest.read(dataset)
    _check_task(config.train, manifest)
    run_dir = open_location(config.train.run_dir)
    ckpt.check_run_dir_is_ours(run_dir, protected_paths(config))
    parent = _parent(warm_start, manifest) if warm_start else None
    with OutputLock(run_dir):  # a second command training into this run dir fails at once
        # as configured: the sizing follows from it and the manifest
        digest = _train_hash(config.train, manifest, parent["model"] if parent else None)
        train = _with_auto_model_resolved(config, manifest).train  # sized by the model it builds
        done = _earlier_run(run_dir, sized(train, manifest.rows("train"), train.workers or 1, manifest.rows("val")),
                            digest, resume, overwrite)  # fmt: skip
        if done is not None:
            return done
        run = _Run(config, manifest, dataset, run_dir, digest, started, parent)
        summary = run.train(resume, progress, quiet, check_model, on_epoch, sharing, fault, reuse_workers, scoring_copies)
        ckpt.write_json(run_dir.child(ckpt.RUN_FILE), summary)
        return summary


def _earlier_run(run_dir: Location, train, digest: str, resume: bool, overwrite: bool) -> dict | None:
    """What the run dir holds decides: the summary of a run that is already done (up to date), a ConfigError
    for another model's run or an unfinished one without --resume, else None: train (from the start,
    or from the newest checkpoint with --resume)."""
    previous = ckpt.read_json(run_dir.child(ckpt.RUN_FILE))
    if overwrite:
        ckpt.clear_run(run_dir)
        return None
    newest = ckpt.newest_checkpoint(run_dir)
    if not previous:
        return None
    if previous.get("train_hash") != digest and (newest or previous.get("status") == "completed"):
        raise ConfigError(
            f"{run_dir.uri}: holds a run of a different model, optimizer or dataset; "
            "use --overwrite or another run dir (--run-dir)"
        )
    completed = previous.get("status") == "completed"
    if completed and (previous.get("epochs_done", 0) >= train.epochs or (previous.get("stopped_early") and not resume)):
        return {**previous, "status": "up_to_date", "message": f"{run_dir.uri}: already trained; --overwrite retrains"}
    if newest and not resume:
        raise ConfigError(
            f"{run_dir.uri}: has an unfinished run (checkpoint {newest.name}); "
            "pass --resume to continue it or --overwrite to start again"
        )
    return None


class _Run:
    """One training on Spark, from the model's settings to the summary (what `run_training` writes last)."""

    def __init__(self, config: ExperimentConfig, manifest: Manifest, dataset: Location, run_dir: Location, digest: str,
                 started: float, parent: dict | None = None):  # fmt: skip
        from dltool.spark.shipping import config_code

        self.manifest, self.dataset, self.run_dir, self.digest, self.started = manifest, dataset, run_dir, digest, started
        self.parent = parent  # the model a warm start begins with (_parent)
        self.rows = manifest.rows("train")
        self.code = config_code(config)  # the factory's module: shipped to executors, on the model check's path
        # Workers build the model from the train section alone: `builtin: auto` is decided here,
        # where every reader (a plugin too) is registered.
        config = _with_auto_model_resolved(config, manifest)
        self.unsized = config.train
        self.val_rows = manifest.rows("val")
        self.config = config.model_copy(update={"train": sized(self.unsized, self.rows, self.unsized.workers or 1,
                                                               self.val_rows)})  # fmt: skip
        if config.tracking.mlflow is not None:  # before Spark starts: an unreachable server costs nothing
            from dltool.tracking import check_reachable

            check_reachable(config.tracking.mlflow.tracking_uri)

    def train(self, resume: bool, progress: bool, quiet: bool, check_model: bool, on_epoch, sharing: int,
              fault: dict | None, reuse_workers: bool = False, scoring_copies: bool = True) -> dict:  # fmt: skip
        """Start Spark (and, on a cluster, build the model once in a child process meanwhile, so a bad model
        stops the run with exit 2 before any Spark job; a local run skips it: its TensorFlow start would
        take the CPU the local Spark start and workers need, measured: the first step 5 s later, and the
        workers report a bad model with the same error), then run the attempts."""
        from dltool.train.barrier import check_slots, task_slots, wait_for_slots
        from dltool.train.progress import TrainProgress

        check_model = check_model and not _local_master(self.config)
        checking = ModelCheck(self.config, self.manifest, self.code) if check_model else contextlib.nullcontext()
        with TrainProgress(enabled=progress and not quiet, quiet=quiet) as view, checking as check:
            spark = training_session(self.config, self.code)
            slots = wait_for_slots(spark, self.config.train.workers)
            local = spark.sparkContext.master.startswith("local")
            # On one machine, one worker with all its cores as threads: 2 workers of 1 core each trained 1.3-2.2x
            # slower (each step waits for the all-reduce; docs/benchmarks.md). A cluster: a worker per task slot.
            workers = self.config.train.workers or (1 if local else slots)
            check_slots(spark, workers, slots)
            # the batch rounded to split over the workers Spark gave
            self.config = self.config.model_copy(update={"train": sized(self.unsized, self.rows, workers, self.val_rows)})
            plan = _plan(self.config, self.manifest, workers)
            view.print(f"{workers} worker(s), {plan.train_rows} train rows, {plan.val_rows} val rows")
            if self.parent is not None and not resume:
                view.print(f"warm start: the weights of {self.parent['model']} (epoch {self.parent['epoch']})")
            status, tracker = self._started(workers, check.result(wait=True, view=view) if check_model else None, view)
            if on_epoch is not None:
                view.handle = _observed(view.handle, on_epoch)
            # Local mode: the machine is ours, so fewer workers than cores share them all.
            threads = max(1, task_slots(spark) // (workers * sharing)) if local else None
            job = replace(self._job(plan, status, threads, local, fault), reuse_worker=reuse_workers,
                          scoring_copies=scoring_copies)  # fmt: skip
            try:
                start = ckpt.newest_intact_checkpoint(self.run_dir, lambda line: view.print(f"[yellow]{line}[/]")) \
                    if resume else None  # fmt: skip
                result = _attempts(spark, job, plan, self.run_dir, start, view, status)
            except BaseException:
                if tracker is not None:
                    tracker.finish("FAILED")
                raise
            if tracker is not None:
                result["mlflow"] = _finish_tracking(tracker, self.config, self.manifest, self.run_dir)
        summary = {**status, **result, "seconds": round(time.monotonic() - self.started, 1)}
        if view.first_step_at is not None:
            summary["time_to_first_step_s"] = round(view.first_step_at - self.started, 1)
        report = view.input_report()
        if report is not None:
            summary["input_wait"] = report
        return summary

    def _started(self, workers: int, model_info: dict | None, view):
        """Mark the run dir as dltool's, write config.json, start the MLflow run (when asked for) and write a
        run.json saying the run is on; the status and the MLflow tracker."""
        run_dir, config = self.run_dir, self.config
        run_dir.fs.create_dir(run_dir.path, recursive=True)
        if not is_owned(run_dir):
            mark(run_dir, "run")
        ckpt.write_json(run_dir.child(ckpt.CONFIG_FILE), config.redacted())
        status = {
            "status": "running", "name": config.name, "dltool_version": dltool.__version__,
            "train_hash": self.digest, "dataset": self.dataset.uri, "dataset_hash": manifest_hash(self.manifest),
            "dataset_version": self.manifest.version, "preprocessing_hash": preprocessing_hash(self.manifest),
            "workers": workers, "epochs": config.train.epochs, "attempts": 0, "model": model_info,
            **({"parent": self.parent} if self.parent else {}),
        }  # fmt: skip
        tracker = _start_tracking(config, self.manifest, status, view)
        stop = run_dir.child(ckpt.STOP_FILE)
        if stop.exists():
            stop.delete()  # a request to stop an earlier run
        ckpt.write_json(run_dir.child(ckpt.RUN_FILE), status)
        return status, tracker

    def _job(self, plan: Plan, status: dict, threads: int | None, local: bool, fault: dict | None) -> TrainJob:
        """What every worker task gets: plain values only."""
        return TrainJob(
            train=self.config.train, manifest=self.manifest, dataset=self.dataset.uri, run_dir=self.run_dir.uri,
            config_hash=self.digest, dataset_hash=status["dataset_hash"], steps_per_epoch=plan.steps_per_epoch,
            global_batch=plan.global_batch, per_worker_batch=plan.per_worker_batch, class_weights=plan.class_weights,
            train_units=plan.train_units, val_units=plan.val_units, global_batches=plan.global_batches,
            job_group=f"dltool-train-{self.digest[:8]}", threads=threads,
            target_scale=_target_scale(self.dataset, self.manifest),
            # Local mode: the factory's module is imported from where it lies.
            user_code=str(self.code) if local and self.code is not None else None, fault=fault,
            warm_start=self.parent["model"] if self.parent else None,
            storage=storage_settings(),
        )  # fmt: skip


def _start_tracking(config: ExperimentConfig, manifest: Manifest, status: dict, view):
    """The MLflow run for this training (config, dataset facts), when the config asks for one; epochs are
    logged from the chief's events as the view receives them."""
    settings = config.tracking.mlflow
    if settings is None:
        return None
    from dltool.tracking import Tracker

    tracker = Tracker.start(settings, config, run_name=config.name)
    counts = manifest.counts
    tracker.log_params({"dataset.manifest_hash": status["dataset_hash"], "dataset.uri": status["dataset"],
                        "dataset.rows": counts.rows, "dataset.quarantined": counts.quarantined,
                        **{f"dataset.{split}_rows": entry.rows for split, entry in manifest.splits.items()}})  # fmt: skip
    status["mlflow"] = tracker.record()
    view.handle = _observed(view.handle, lambda event: tracker.log_metrics(event["logs"], step=event["epoch"]))
    return tracker


def _observed(handle, on_epoch):
    """A view's event handler that also passes each epoch event to on_epoch."""

    def handle_and_observe(event: dict) -> None:
        if event.get("type") == "epoch":
            on_epoch(event)
        handle(event)

    return handle_and_observe


def _finish_tracking(tracker, config: ExperimentConfig, manifest: Manifest, run_dir: Location) -> dict:
    """History, TensorBoard logs and the kept model into the MLflow run; the model registered when asked."""
    tracker.log_files(run_dir.child(ckpt.HISTORY_FILE), "")
    if run_dir.child("tensorboard").exists():
        tracker.log_files(run_dir.child("tensorboard"), "tensorboard")
    version = tracker.log_keras_model(run_dir.child("model", ckpt.MODEL_FILE), manifest, config.tracking.mlflow.register_as)
    tracker.finish()
    return {**tracker.record(), "registered_as": config.tracking.mlflow.register_as, "version": version}


def _with_auto_model_resolved(config: ExperimentConfig, manifest: Manifest) -> ExperimentConfig:
    from dltool.readers.base import default_model_for

    model = config.train.model
    builtin = default_model_for(manifest.reader, manifest.features)
    if model.kind != "builtin" or (model.builtin or "auto") != "auto" or builtin is None:
        return config  # build_model explains an unknown reader
    train = config.train.model_copy(update={"model": model.model_copy(update={"builtin": builtin})})
    return config.model_copy(update={"train": train})


def _target_scale(dataset: Location, manifest: Manifest) -> list[float] | None:
    """[mean, std] of a regression's train labels (read from its shards' label column); None for classes.

    The model's head outputs z * std + mean: it starts at the labels' scale whatever their units
    (prices in thousands, years), where a bare Dense(1) spends its first epochs finding the mean.
    """
    if manifest.label.kind != "regression" or not manifest.rows("train"):
        return None
    import numpy as np
    import pyarrow.parquet as pq

    labels = np.concatenate([
        pq.read_table(dataset.child(*f.split("/")).path, columns=["label"], filesystem=dataset.fs)
        .column("label").to_numpy().astype(np.float64)
        for f in manifest.splits["train"].files
    ])  # fmt: skip
    std = float(labels.std())
    return [float(labels.mean()), std if std > 1e-12 else 1.0]


def _train_hash(train: TrainSettings, manifest: Manifest, parent: str | None = None) -> str:
    settings = {"train": train.model_dump(mode="json", exclude=RESUMABLE_CHANGES), "data": manifest_hash(manifest)}
    return config_hash({**settings, "parent": parent} if parent else settings)


def _parent(uri: str, manifest: Manifest) -> dict:
    """What run.json says of the model a warm start begins with; a ConfigError when it was trained on data
    of another meaning (other features, classes, train statistics or ingest settings)."""
    model, recorded = ckpt.parent_model(uri)
    want = recorded.get("preprocessing_hash")
    if want is not None and want != preprocessing_hash(manifest):
        raise ConfigError(
            f"{model.uri}: --warm-start: that model was trained on data with other features, classes, train "
            "statistics or ingest settings; it can only continue on another version of its own dataset"
        )
    return {"uri": uri, "model": model.uri, "dataset": recorded.get("dataset"),
            "dataset_version": recorded.get("dataset_version"), "epoch": recorded.get("epoch", recorded.get("model_epoch")),
            "logs": recorded.get("final") or recorded.get("logs")}  # fmt: skip


def _check_task(train: TrainSettings, manifest: Manifest) -> None:
    label = manifest.label
    if label.kind not in ("class", "regression"):
        raise ConfigError("the dataset has no labels (ingest label source 'none'): nothing to train on")
    if not manifest.rows("train"):  # an empty DataFrame through Spark ML: before its classes, which it cannot count
        raise ConfigError(f"the dataset has no rows in its train split ({manifest.counts.rows} in all): nothing to "
                          "train on")  # fmt: skip
    if label.kind == "class" and label.classes < 2:
        raise ConfigError(f"the dataset has {label.classes} class(es); classification needs at least 2")
    metrics = resolve_metrics(train.metrics, label.kind, label.classes)
    loss_name(train.loss, label.kind)
    if isinstance(train.class_weights, dict):
        if label.kind != "class":
            raise ConfigError("train.class_weights: only for classification")
        unknown = sorted(set(train.class_weights) - set(label.vocabulary))
        if unknown:
            raise ConfigError(f"train.class_weights: unknown classes {unknown}; the dataset has {list(label.vocabulary)}")
    has_val = manifest.rows("val") > 0
    logged = ["loss", *metrics]
    known = logged + ([f"val_{m}" for m in logged] if has_val else [])
    if train.monitor not in known:
        why = " (the dataset has no val rows)" if train.monitor.startswith("val_") and not has_val else ""
        raise ConfigError(f"train.monitor: {train.monitor!r} is not logged{why}; choose one of {', '.join(known)}")


def _class_weights(train: TrainSettings, manifest: Manifest) -> list[float] | None:
    vocabulary = manifest.label.vocabulary or ()
    if train.class_weights == "none" or manifest.label.kind != "class":
        return None
    if isinstance(train.class_weights, dict):
        return [float(train.class_weights.get(name, 1.0)) for name in vocabulary]
    counts = manifest.splits["train"].per_class
    total = sum(counts.values())
    return [total / (len(vocabulary) * counts[name]) if counts.get(name) else 0.0 for name in vocabulary]


def _plan(config: ExperimentConfig, manifest: Manifest, workers: int) -> Plan:
    from dltool.shards.feed import plan_shares

    train = config.train
    if train.per_worker_batch_size:
        per_worker = train.per_worker_batch_size
        global_batch = per_worker * workers
    else:
        global_batch = train.global_batch_size  # sized to the rows when the config names none
        if global_batch % workers:
            raise ConfigError(
                f"train.global_batch_size: {global_batch} does not split evenly over {workers} workers; "
                f"use a multiple of {workers} or set per_worker_batch_size"
            )
        per_worker = global_batch // workers
    train_rows = manifest.rows("train")
    if train_rows < global_batch:
        raise ConfigError(
            f"the train split has {train_rows} rows, fewer than one global batch ({global_batch}); "
            "lower the batch size or ingest more data"
        )
    val_rows = manifest.rows("val")
    steps = train.steps_per_epoch or max(1, train_rows // global_batch)
    row_bytes = manifest.features.nbytes + 4  # + the label
    as_lists = lambda shares: [[[u.file, u.row_group, u.start, u.stop] for u in share] for share in shares]
    # Global batches when the split fits a worker's cache: every rank gets one worker's plan of the
    # whole split, so any number of workers trains on the same batches in the same order.
    global_batches = train_rows * row_bytes <= train.cache_mb * 2**20
    if global_batches:
        train_units = as_lists(plan_shares(config.dataset.path, manifest, "train", 1)) * workers
    else:
        train_units = as_lists(plan_shares(config.dataset.path, manifest, "train", workers))
    return Plan(
        workers=workers, global_batch=global_batch, per_worker_batch=per_worker, steps_per_epoch=steps,
        train_rows=train_rows, val_rows=val_rows, class_weights=_class_weights(train, manifest),
        train_units=train_units, global_batches=global_batches,
        val_units=as_lists(plan_shares(config.dataset.path, manifest, "val", workers)) if val_rows else None,
    )  # fmt: skip


def _local_master(config: ExperimentConfig) -> bool:
    """Whether Spark will run on this machine: a local master, not overridden by spark-submit or a running session."""
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        return False
    if "pyspark" in sys.modules:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            return active.sparkContext.master.startswith("local")
    return config.spark.master.startswith("local")


def training_session(config: ExperimentConfig, code: Path | None):
    """The Spark session a training runs in, with a barrier timeout (`run` and `tune` start it early and share it)."""
    from dltool.spark.session import spark_session

    # A hung worker must fail the barrier stage rather than block it forever.
    conf = {"spark.barrier.sync.timeout": str(config.train.timeout_s), **config.spark.conf}
    return spark_session(config.spark.model_copy(update={"conf": conf}), user_code=code,
                         warm=("dltool.train.barrier", "dltool.train.job"), sql=False)  # fmt: skip


class ModelCheck:
    """Builds the model and optimizer in a child process (TensorFlow stays out of the driver).

    `code` is the config's factory module (shipping.config_code): its folder leads the child's PYTHONPATH.
    """

    def __init__(self, config: ExperimentConfig, manifest: Manifest, code: Path | None = None):
        from dltool.spark.shipping import with_code_path

        spec = {"train": config.train.model_dump(mode="json"), "manifest": manifest.to_json(), "steps_per_epoch": 1}
        handle, self._path = tempfile.mkstemp(prefix="dltool-check-", suffix=".json")
        with os.fdopen(handle, "w") as f:
            json.dump(spec, f)
        env = with_code_path({**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}, code)
        self._child = subprocess.Popen(
            [sys.executable, "-m", "dltool.train.worker", "--check", self._path],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self._info: dict | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        if self._child.poll() is None:
            self._child.kill()
        self._child.communicate()
        os.unlink(self._path)

    def result(self, wait: bool, view=None) -> dict | None:
        """The model's description once the check is done (None while it runs); raises its error."""
        if self._info is not None or (not wait and self._child.poll() is None):
            return self._info
        out, err = self._child.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            last = (err.strip().splitlines() or ["no output"])[-1]
            raise DltoolError(f"cannot build the model: the check process failed: {last}")
        result = json.loads(lines[-1])
        if not result["ok"]:
            ErrorRecord.from_json(result).raise_()
        self._info = result["model"]
        if view is not None:
            view.print(f"model: {self._info['params']:,} parameters ({self._info['trainable_params']:,} trainable)")
        return self._info


def _attempts(spark, job: TrainJob, plan: Plan, run_dir: Location, resume_from, view, status: dict) -> dict:
    """Run the barrier stage; after a failure, relaunch from the newest checkpoint up to max_retries times."""
    from dltool.train.events import EventServer

    max_retries = job.train.max_retries
    sc = spark.sparkContext
    host = "127.0.0.1" if sc.master.startswith("local") else sc.getConf().get("spark.driver.host")
    with EventServer(host) as server:
        attempt = 0
        while True:
            if resume_from is not None:
                view.print(f"resuming from {resume_from.name}")
            this = replace(job, attempt=attempt, events=server.address,
                           resume_from=resume_from.location.uri if resume_from else None)  # fmt: skip
            status["attempts"] = attempt + 1
            ckpt.write_json(run_dir.child(ckpt.RUN_FILE), status)
            done, failure = _one_attempt(spark, this, plan.workers, server, view, status)
            if failure is None:
                newest = ckpt.newest_checkpoint(run_dir)
                meta = newest.meta() if newest else {}
                history = meta.get("history", [])
                kept = done.get("model_epoch")
                return {
                    "status": "completed", "epochs_done": len(history), "seed": job.train.seed,
                    "stopped_early": bool(done.get("stopped_early")), "best": meta.get("best"),
                    "stopped_on_request": bool(done.get("stopped_on_request")),
                    "replicas_in_sync": done.get("replicas_in_sync", 0),
                    # The kept model (train.final): its epoch and that epoch's metrics.
                    "model_epoch": kept, "kept": job.train.final,
                    "final": next((h for h in history if h["epoch"] == kept), meta.get("logs")),
                    "last": meta.get("logs"), "model": run_dir.child("model", ckpt.MODEL_FILE).uri,
                    "saved_model": run_dir.child("model", "saved_model").uri if job.scoring_copies else None,
                }  # fmt: skip
            if failure.exit_code == 2 or attempt >= max_retries:  # a config error fails every attempt alike
                status.update(status="failed", error=str(failure))
                ckpt.write_json(run_dir.child(ckpt.RUN_FILE), status)
                tries = f" after {attempt + 1} attempts" if attempt else ""
                logs = attempt_logs(run_dir, attempt).uri
                raise type(failure)(f"training failed{tries}: {failure} (workers' output: {logs})") from failure
            view.print(f"[red]attempt {attempt + 1} failed:[/] {failure}")
            view.print(f"  workers' output: {attempt_logs(run_dir, attempt).uri}")
            attempt += 1
            resume_from = ckpt.newest_intact_checkpoint(run_dir, lambda line: view.print(f"[yellow]{line}[/]"))
            where = resume_from.name if resume_from else "the start"
            view.print(f"[yellow]retrying from {where}[/] (attempt {attempt + 1} of {max_retries + 1})")


def _one_attempt(spark, job: TrainJob, workers: int, server, view, status: dict) -> tuple[dict, DltoolError | None]:
    """One barrier stage, with events shown as they arrive; returns (done event, failure or None).

    The chief's start event fills `status["model"]` when no model check described the model first."""
    from dltool.train.barrier import barrier_train

    outcome: dict = {}

    ended = {"type": "stage ended"}  # queued by the stage's thread as it ends: no wait for the next poll

    def launch() -> None:
        try:
            barrier_train(spark, job, workers)
        except BaseException as e:  # noqa: BLE001 - handed to the driver thread
            outcome["error"] = e
        finally:
            server.events.put(ended)

    thread = threading.Thread(target=launch, name="dltool-barrier", daemon=True)
    thread.start()
    done: dict = {}
    digests: dict[int, str] = {}
    over = False
    try:
        while not ((over or not thread.is_alive()) and server.events.empty()):
            try:
                event = server.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if event is ended:
                over = True
                continue
            view.handle(event)
            if event["type"] == "start" and event.get("model") and status.get("model") is None:
                status["model"] = event["model"]
                view.print(f"model: {event['model']['params']:,} parameters ({event['model']['trainable_params']:,} trainable)")
            if event["type"] == "done":
                digests[event["rank"]] = event["weights_sha256"]
                if event["rank"] == 0:
                    done = event
    except KeyboardInterrupt:
        spark.sparkContext.cancelAllJobs()
        thread.join()
        raise
    if "error" not in outcome:
        if len(set(digests.values())) > 1:
            return done, DltoolError("the workers' weights differ after training (replicas out of sync)")
        return {**done, "replicas_in_sync": len(digests)}, None
    # Spark's error names the first failure: a lost executor, or what the failed worker's task relayed
    # (the worker's own error, or how it died). The others only report the broken collective after it.
    return done, ErrorRecord.from_exception(outcome["error"]).exception()
