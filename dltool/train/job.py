"""What the driver hands the training workers: the job of one attempt, and each worker's part of it, as JSON."""

from __future__ import annotations

from dataclasses import dataclass, fields

from dltool.config.models import TrainSettings
from dltool.storage.manifest import Manifest

RUN_DONE = "\x1edltool-run-done "  # the worker child's last line of a run on stdout; the run's exit code follows

# One unit of a worker's share: [shard file, row group, first row, end row] (see shards.feed.FeedUnit).
Units = list[list]


@dataclass(frozen=True)
class TrainJob:
    """Everything every worker of a run needs, computed once on the driver; plain values, sent as JSON.

    `attempt`, `events` and `resume_from` change from one attempt to the next (`dataclasses.replace`).
    """

    train: TrainSettings  # the train section only: a plugin reader's ingest section stays unread in workers
    manifest: Manifest
    dataset: str  # URI
    run_dir: str  # URI
    config_hash: str  # the run's train hash, recorded in each checkpoint
    dataset_hash: str  # manifest_hash of the dataset, recorded in each checkpoint
    steps_per_epoch: int
    global_batch: int
    per_worker_batch: int
    class_weights: list[float] | None
    train_units: list[Units]  # one share per rank
    val_units: list[Units] | None  # one share per rank; None without val rows
    global_batches: bool  # every rank holds the whole train split and takes its slice of each global batch
    job_group: str  # the Spark job group, to cancel the barrier stage
    threads: int | None  # CPU threads per worker; None: the task's CPUs
    target_scale: list[float] | None = None  # regression: [mean, std] of the train labels, the head's output scale
    user_code: str | None = None  # local mode: the config's factory module, first on the worker's PYTHONPATH
    fault: dict | None = None  # the test-only fault hook of run_training
    storage: dict | None = None  # the object-store settings (storage_scope); never credentials
    attempt: int = 0
    events: dict | None = None  # host, port and token of the driver's event server
    resume_from: str | None = None  # URI of the checkpoint this attempt starts from
    warm_start: str | None = None  # URI of the .keras model whose weights a run that resumes nothing starts from
    reuse_worker: bool = False  # one CPU worker: run in a process an earlier run kept (tune's trials, Spark ML fits)
    scoring_copies: bool = True  # the final model's SavedModel and checked ONNX copy (tune's trials: model.keras only)

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**data, "train": self.train.model_dump(mode="json"), "manifest": self.manifest.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> TrainJob:
        return cls(**{**data, "train": TrainSettings.model_validate(data["train"]),
                      "manifest": Manifest.from_json(data["manifest"])})  # fmt: skip


@dataclass(frozen=True)
class WorkerSpec:
    """One worker's part of a job: its rank, the number of workers, its CPU threads and its shares of the splits."""

    job: TrainJob
    rank: int
    workers: int
    threads: int
    train_units: Units
    val_units: Units | None
    error_file: str | None = None  # where a failing worker leaves its ErrorRecord for its barrier task

    @property
    def chief(self) -> bool:
        return self.rank == 0

    @classmethod
    def for_rank(cls, job: TrainJob, rank: int, workers: int, task_cpus: int, error_file: str | None = None) -> WorkerSpec:
        val_units = job.val_units[rank] if job.val_units else None
        return cls(job, rank, workers, job.threads or task_cpus, job.train_units[rank], val_units, error_file)

    def to_json(self) -> dict:
        return {"job": self.job.to_json(), "rank": self.rank, "workers": self.workers, "threads": self.threads,
                "train_units": self.train_units, "val_units": self.val_units, "error_file": self.error_file}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> WorkerSpec:
        return cls(**{**data, "job": TrainJob.from_json(data["job"])})
