"""One TensorFlow training worker: `python -m dltool.train.worker --serve`, started by its barrier task.

Each barrier task runs the worker in a child process, so TensorFlow's state
never lives inside a Spark Python worker, and the child dies with the Python
worker that started it (PR_SET_PDEATHSIG). The child imports TensorFlow at once,
then trains each run its task sends on stdin, one JSON line each (`serve`). A
one-worker CPU run that asks for it (`TrainJob.reuse_worker`: the tuner's trials
and Spark ML fits) leaves the child waiting for the next run of the same Python
worker, TensorFlow loaded; every other child serves one run. The task sets
CUDA_VISIBLE_DEVICES in the child's environment only, TF_CONFIG and TMPDIR per run.

Keras 3's `Model.fit` fails under MultiWorkerMirroredStrategy, so the step is
our own: `strategy.run` of a GradientTape step whose optimizer update is
all-reduced by the strategy. Loss and metrics are exact sums, added up across
workers once per epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dltool.errors import ConfigError, DltoolError, ErrorRecord
from dltool.storage.fs import local_scratch
from dltool.storage.manifest import preprocessing_hash
from dltool.train import checkpoints as ckpt
from dltool.train.events import EventClient
from dltool.train.metrics import (
    best_epoch_entry,
    finish,
    improved,
    loss_name,
    members_loss,
    metric_sums_fn,
    per_example_loss_fn,
    resolve_metrics,
    sum_names,
)

if TYPE_CHECKING:
    from dltool.train.job import WorkerSpec

REPORT_EVERY_S = 0.5


class InjectedFault(RuntimeError):
    """Raised by the test-only fault hook (`run_training(..., fault=...)`)."""


def die_with_parent() -> None:
    """SIGKILL this process when the Spark task that started it dies (Linux), even by SIGKILL."""
    parent = os.environ.get("DLTOOL_PARENT_PID")
    if not parent:
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != int(parent):  # the task died before prctl took effect
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    die_with_parent()
    if argv[0] == "--check":
        return check_model(json.loads(Path(argv[1]).read_text()))
    return serve()


def serve() -> int:
    """Run each run the barrier task sends, a JSON line {"spec", "scratch", "cluster", "keep"} on stdin, until stdin
    closes; each run's output ends with RUN_DONE and its exit code. A failed run ends the process. After a run the
    process will be kept for (`keep`), Keras forgets it (0.4-0.5 s) once the task has its answer.

    A kept process waits here between runs as long as the Spark Python worker that started it lives (Spark stops
    an idle one after a minute): that worker holds the other end of stdin, and its death ends this process.
    """
    from dltool.tfenv import import_tensorflow_quietly
    from dltool.train.job import RUN_DONE

    import_tensorflow_quietly()  # the slow import overlaps the task's address exchange, once per process
    runs = 0
    while True:
        line = sys.stdin.readline()
        if not line.strip():
            return 0
        runs += 1
        request = json.loads(line)
        code = run_once(request, runs)
        print(f"{RUN_DONE}{code}", flush=True)
        if code != 0:
            return code  # a process whose run failed is not trusted with another
        if request.get("keep"):
            _reset_keras()


def run_once(request: dict, runs: int) -> int:
    """One training run in this process: TMPDIR, the working folder and TF_CONFIG are the run's."""
    import tempfile

    from dltool.train.job import WorkerSpec

    scratch = request["scratch"]
    os.environ["TMPDIR"], tempfile.tempdir = scratch, None
    os.chdir(scratch)
    os.environ.pop("TF_CONFIG", None)
    if request.get("cluster"):  # from the barrier task; none for one worker
        os.environ["TF_CONFIG"] = request["cluster"]
    spec = WorkerSpec.from_json(json.loads(Path(request["spec"]).read_text()))
    events = EventClient(spec.job.events, spec.rank)
    loaded = ", TensorFlow already loaded" if runs > 1 else ""
    print(f"dltool worker: run {runs} of process {os.getpid()} (Spark Python worker {os.getppid()}){loaded}", flush=True)
    try:
        Worker(spec, events).run()
    except BaseException as e:  # noqa: BLE001 - report every failure to the driver, then exit non-zero
        return report_failure(spec, events, e, traceback.format_exc().rstrip().splitlines())
    finally:
        os.chdir(os.path.dirname(scratch))  # the task removes its scratch folder when the run is done
    events.close()
    return 0


def _reset_keras() -> None:
    """Forget the last run's models and layer names; the next run builds its own from its seed."""
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


def report_failure(spec: WorkerSpec, events: EventClient, error: BaseException, lines: list[str]) -> int:
    """Print the failure, send it to the driver, leave its record for the barrier task; the exit code."""
    record = ErrorRecord.from_exception(error)
    print("\n".join(lines), flush=True)
    events.send("failed", error=record.to_json(), traceback=lines[-12:])  # shown as it happens
    Path(spec.error_file).write_text(json.dumps(record.to_json()))  # relayed by the barrier task
    events.close()
    return record.exit_code


class Watchdog:
    """One thread that calls `on_stall(idle_s)` once the worker has made no progress for `timeout_s`.

    Collectives between workers run without TensorFlow's own timeout
    (`CommunicationOptions.timeout_seconds`): TensorFlow starts a detached thread per collective
    op that sleeps the whole timeout (its base_collective_executor.cc notes that one shared
    watchdog thread would do). At tens of collectives a step that is thousands of
    sleeping threads a minute, until the worker cannot create one more and aborts. This single
    thread keeps the same bound: a peer that is stuck or gone stops every other worker's beats.
    `timeout_s=None` (one worker, nothing to wait for) watches nothing.
    """

    def __init__(self, timeout_s: float | None, on_stall):
        self.timeout_s = timeout_s
        self._on_stall = on_stall
        self._last = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="dltool-watchdog", daemon=True)

    def beat(self) -> None:
        self._last = time.monotonic()

    def __enter__(self) -> Watchdog:
        self.beat()
        if self.timeout_s is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(min(5.0, self.timeout_s / 4)):  # a poll interval, not a synchronisation
            idle = time.monotonic() - self._last
            if idle > self.timeout_s:
                self._on_stall(idle)
                return


def resource_usage() -> dict | None:
    """This process's threads, resident memory (MB) and open files, from /proc (Linux); None elsewhere."""
    try:
        threads = len(os.listdir("/proc/self/task"))
        open_files = len(os.listdir("/proc/self/fd"))
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return {"threads": threads, "rss_mb": round(resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1),
            "open_files": open_files}  # fmt: skip


RESOURCE_LINE = "dltool resources: epoch={epoch} steps={steps} threads={threads} rss_mb={rss_mb} open_files={open_files}"


def read_resource_lines(log_text: str) -> list[dict]:
    """The per-epoch resource lines of a worker's log, as numbers (the soak test and bench/soak.py read them)."""
    import re

    pattern = re.compile(r"^dltool resources: epoch=(\d+) steps=(\d+) threads=(\d+) rss_mb=([\d.]+) open_files=(\d+)$")
    rows = []
    for line in log_text.splitlines():
        match = pattern.match(line)
        if match:
            epoch, steps, threads, rss, files = match.groups()
            rows.append({"epoch": int(epoch), "steps": int(steps), "threads": int(threads), "rss_mb": float(rss),
                         "open_files": int(files)})  # fmt: skip
    return rows


def check_model(spec: dict) -> int:
    """Build the model and optimizer once, before Spark starts work: config errors surface early.

    Prints one JSON line: {"ok": true, "model": description}, or {"ok": false, **ErrorRecord}.
    """
    from dltool.config.models import TrainSettings
    from dltool.storage.manifest import Manifest
    from dltool.train.model import build_model, build_optimizer, describe_model

    try:
        from dltool.tfenv import import_tensorflow_quietly

        import_tensorflow_quietly()
        # The train section only: the ingest section may name a reader this process has not imported.
        train = TrainSettings.model_validate(spec["train"])
        model = build_model(train, Manifest.from_json(spec["manifest"]))
        build_optimizer(train, spec["steps_per_epoch"])
        print(json.dumps({"ok": True, "model": describe_model(model)}), flush=True)
        return 0
    except DltoolError as e:
        record = ErrorRecord.from_exception(e)
    except Exception as e:  # noqa: BLE001 - keras raises many types for a bad model (as model_errors)
        record = ErrorRecord.from_exception(ConfigError(f"train.model: {type(e).__name__}: {e}"))
    print(json.dumps({"ok": False, **record.to_json()}), flush=True)
    return 2


@contextmanager
def model_errors():
    """Building the model and optimizer: whatever Keras raises is the config's fault (exit 2, never retried)."""
    try:
        yield
    except DltoolError:
        raise
    except Exception as e:  # noqa: BLE001 - keras raises many types for a bad model
        raise ConfigError(f"train.model: {type(e).__name__}: {e}") from e


@dataclass
class RunState:
    """Where a run stands between epochs; restored from a checkpoint's metadata on resume."""

    history: list[dict]
    best: dict | None
    stale: int
    start_epoch: int

    @classmethod
    def from_checkpoint(cls, meta: dict) -> RunState:
        return cls(meta.get("history", []), meta.get("best"), meta.get("stale_epochs", 0), meta.get("epoch", 0) + 1)


class Steps:
    """The compiled train and eval steps of one worker, and the cross-worker reductions they need.

    Keras 3's `fit` fails under MultiWorkerMirroredStrategy, so the train step is a
    GradientTape step run by `strategy.run`; each replica divides its summed loss by the
    global batch and the optimizer all-reduces the gradients with SUM: the mean over the
    global batch. Metrics come back as exact sums.
    """

    def __init__(self, worker: Worker, strategy, model, optimizer, mixed: bool):
        import tensorflow as tf

        from dltool.train.model import training_view

        job, manifest = worker.job, worker.job.manifest
        self.workers, self.strategy, self.model, self.optimizer = worker.workers, strategy, model, optimizer
        batch, global_batch = job.per_worker_batch, job.global_batch
        loss_fn = per_example_loss_fn(loss_name(worker.train.loss, worker.kind), worker.classes,
                                      worker.train.label_smoothing)  # fmt: skip
        sums_fn = metric_sums_fn(worker.metrics)
        weights = tf.constant(job.class_weights, tf.float32) if job.class_weights else None
        x_spec = tf.TensorSpec([batch, *manifest.features.shape], manifest.features.dtype)
        y_spec = tf.TensorSpec([batch], tf.int32 if worker.kind == "class" else tf.float32)
        view = training_view(model, manifest)

        def forward(x, y):
            """The model's outputs and the per-example loss: of each member's own prediction, averaged, for a
            model of ensemble members (`training_view`); of its prediction otherwise."""
            if view is None:
                outputs = tf.cast(model(x, training=True), tf.float32)
                return outputs, loss_fn(y, outputs)
            outputs, members = (tf.cast(t, tf.float32) for t in view(x, training=True))
            return outputs, members_loss(loss_fn, y, members)

        def step_fn(x, y):
            with tf.GradientTape() as tape:
                outputs, per_example = forward(x, y)
                weighted = per_example * tf.gather(weights, y) if weights is not None else per_example
                loss = tf.reduce_sum(weighted) / global_batch
                if model.losses:
                    loss += tf.add_n(model.losses) / self.workers
                scaled = optimizer.scale_loss(loss) if mixed else loss
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            # A read of an updated variable is ordered after its update (and so after the gradients' all-reduce):
            # the sums are ready when the step is done, which the clock in `train` relies on.
            with tf.control_dependencies([tf.identity(v) for v in model.trainable_variables[-1:]]):
                return tf.identity(sums_fn(y, outputs, per_example))

        sums_shape = [len(sum_names(worker.metrics))]

        # No AutoGraph: shipped to a cluster in a zip, this code has no source for it to convert (it warned,
        # then ran the functions as written); the explicit while_loop below needs none, locally too.
        @tf.function(autograph=False)
        def train(batches, steps):
            """`steps` train steps on batches from the tf.data iterator, in one call; their metric sums and
            the seconds this worker waited for its batches and spent in its steps.

            Several steps per call: each call of a function that holds collectives keeps a few KB
            inside TensorFlow (measured: about 7 KB a call with 2 workers, none with 1), so a
            call per step grew every worker by 150 MB per 20,000 steps. The clock reads are
            chained to the previous step's sums, so the next batch is asked for when that step is
            done: the wait is what the feed's prefetch did not hide.
            """

            def one_step(i, sums, clock):
                # Each clock read waits for the one before and gates what follows: the executor runs ready ops in
                # any order, so a read that only depended on its event could run late.
                with tf.control_dependencies([sums, clock]):
                    asked = tf.timestamp()
                with tf.control_dependencies([asked]):
                    x, y = next(batches)
                with tf.control_dependencies([x, y]):
                    got = tf.timestamp()
                with tf.control_dependencies([got]):
                    x, y = tf.ensure_shape(x, x_spec.shape), tf.ensure_shape(tf.cast(y, y_spec.dtype), y_spec.shape)
                sums = sums + strategy.experimental_local_results(strategy.run(step_fn, args=(x, y)))[0]
                with tf.control_dependencies([sums]):
                    done = tf.timestamp()
                return i + 1, sums, clock + tf.stack([got - asked, done - got])

            start = (tf.constant(0, tf.int32), tf.zeros(sums_shape, tf.float32), tf.zeros([2], tf.float64))
            return tf.while_loop(lambda i, *_: i < steps, one_step, start)[1:]

        @tf.function(reduce_retracing=True, autograph=False)
        def evaluate(x, y):
            outputs = tf.cast(model(x, training=False), tf.float32)
            return sums_fn(y, outputs, loss_fn(y, outputs))

        self.train, self.evaluate = train, evaluate
        # BatchNorm moving statistics are updated by each replica from its own batches (Keras 3
        # creates them unsynchronised); averaging them keeps every worker's model identical.
        self.moving = [v for v in model.non_trainable_variables if "moving_" in v.path]
        self._reducers: dict[int, object] = {}  # one compiled all-reduce per vector length

    def iterations(self) -> int:
        return int(self.optimizer.iterations.numpy())  # a MirroredVariable under several workers: no __int__

    def learning_rate(self) -> float:
        return float(self.optimizer.learning_rate)

    def all_reduce(self, values: np.ndarray) -> np.ndarray:
        """The sum of a float32 vector `values` over all workers.

        Compiled once per length: run eagerly, each call builds and launches its collective anew
        (TensorFlow warns "Using CollectiveAllReduceStrategy eagerly has significant overhead").
        """
        if self.workers == 1:
            return values
        import tensorflow as tf

        reduce = self._reducers.get(values.size)
        if reduce is None:
            strategy = self.strategy

            @tf.function(input_signature=[tf.TensorSpec([values.size], tf.float32)])
            def reduce(v):
                return strategy.reduce("SUM", strategy.run(tf.identity, args=(v,)), axis=None)

            self._reducers[values.size] = reduce
        return reduce(tf.constant(values, tf.float32)).numpy()

    def sync_moving_statistics(self) -> None:
        if self.workers == 1 or not self.moving:
            return
        flat = np.concatenate([np.ravel(v.numpy()).astype(np.float32) for v in self.moving])
        flat = self.all_reduce(flat) / self.workers
        offset = 0
        for v in self.moving:
            size = int(np.prod(v.shape))
            v.assign(flat[offset : offset + size].reshape(v.shape).astype(v.dtype))
            offset += size


class Worker:
    def __init__(self, spec: WorkerSpec, events: EventClient):
        from dltool.storage.fs import open_location

        self.spec, self.job = spec, spec.job
        self.events = events
        self.rank, self.workers, self.chief = spec.rank, spec.workers, spec.chief
        self.train = spec.job.train
        self.manifest = spec.job.manifest
        self.run_dir = open_location(spec.job.run_dir)
        self._tensorboard_copy = None  # (local folder, run dir's tensorboard/) where TensorFlow cannot write
        self.kind = self.manifest.label.kind
        self.classes = self.manifest.label.classes
        self.metrics = resolve_metrics(self.train.metrics, self.kind, self.classes)
        self.watchdog = Watchdog(float(self.train.timeout_s) if self.workers > 1 else None, self._stalled)

    # -- set-up ---------------------------------------------------------------------------------

    def _strategy(self):
        import tensorflow as tf

        threads = max(1, self.spec.threads)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        self.gpu = bool(gpus)
        if self.workers == 1:
            return tf.distribute.get_strategy()
        implementation = (
            tf.distribute.experimental.CommunicationImplementation.NCCL
            if gpus
            else tf.distribute.experimental.CommunicationImplementation.RING
        )
        # No timeout_seconds: it costs a sleeping thread per collective op (see Watchdog), which keeps the bound.
        options = tf.distribute.experimental.CommunicationOptions(implementation=implementation)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)

    def _feeds(self):
        from dltool.shards.feed import FeedUnit, ShardFeed

        def feed(units, workers):
            return ShardFeed(
                self.job.dataset,
                self.manifest,
                [FeedUnit(*u) for u in units],
                seed=self.train.seed,
                rank=self.rank,
                workers=workers,
                cache_mb=self.train.cache_mb,
            )

        train = feed(self.spec.train_units, self.workers if self.job.global_batches else 1)
        val = feed(self.spec.val_units, 1) if self.spec.val_units is not None else None
        return train, val

    def _restore(self, model, optimizer) -> dict:
        """Load a checkpoint's variables and optimizer state; returns its metadata."""
        from dltool.storage.fs import open_location

        location = open_location(self.job.resume_from)
        meta = json.loads(location.child(ckpt.CHECKPOINT_FILE).read_bytes())
        _load_state(location, {"model": model.variables, "optimizer": optimizer.variables})
        return meta

    def _warm_start(self, model) -> None:
        """Start from the parent model's weights (`--warm-start`); the optimizer starts afresh."""
        from dltool.storage.fs import open_location

        location = open_location(self.job.warm_start)
        scratch = local_scratch("warm-start")
        try:
            (scratch / ckpt.MODEL_FILE).write_bytes(location.read_bytes())
            model.load_weights(str(scratch / ckpt.MODEL_FILE))
        except ValueError as e:  # Keras: another architecture
            raise ConfigError(f"{location.uri}: --warm-start: its weights do not fit this model "
                              f"({str(e).splitlines()[0]}); the parent must have the same model settings") from e
        finally:
            _remove_tree(scratch)

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> None:
        """Set up, then train epoch by epoch: steps, validation, checkpoint, early stop; then keep the model."""
        strategy = self._strategy()  # first: MultiWorkerMirroredStrategy must exist before other TF ops
        model, optimizer, steps = self._build(strategy)
        state = RunState.from_checkpoint(self._restore(model, optimizer) if self.job.resume_from else {})
        if self.job.warm_start and not self.job.resume_from:
            self._warm_start(model)
        train_feed, val_feed = self._feeds()
        batch, per_epoch = self.job.per_worker_batch, self.job.steps_per_epoch
        # A resumed run continues the data stream exactly where its checkpoint left it.
        batches = iter(train_feed.dataset(batch, training=True, start_batch=(state.start_epoch - 1) * per_epoch,
                                          shuffle_buffer=self.train.shuffle_buffer))  # fmt: skip
        writers = self._tensorboard() if self.chief else None
        if self.chief:
            from dltool.train.model import describe_model

            self.events.send("start", epoch=state.start_epoch, epochs=self.train.epochs, steps=per_epoch,
                             global_batch=self.job.global_batch, model=describe_model(model),
                             feed={"cached": train_feed.cached, "mb": round(train_feed.nbytes / 2**20, 1),
                                   "cache_mb": self.train.cache_mb, "per_worker_batch": batch})  # fmt: skip
        stop = requested = False
        with self.watchdog:
            for epoch in range(state.start_epoch, self.train.epochs + 1):
                logs, timing = self._train_epoch(epoch, batches, steps, val_feed, writers)
                logs.update(**self._validate(steps, val_feed), **timing)
                stop = self._end_epoch(epoch, logs, state, model, optimizer, writers)
                self.watchdog.beat()
                self._log_resources(epoch, steps)
                requested = not stop and epoch < self.train.epochs and self._stop_requested(steps)
                if stop or requested:
                    break
        for writer in (writers or {}).values():
            writer.close()  # a kept worker process goes on to the next run: nothing of this one stays open
        self._finish(model, state, stop, requested, val_feed or train_feed)  # no collective left: saving may take time

    def _stalled(self, idle_s: float) -> None:
        """The watchdog's verdict: fail this worker now (the barrier task relays it; the run retries)."""
        error = DltoolError(
            f"no progress for {idle_s:.0f} s (train.timeout_s is {self.train.timeout_s}): a peer worker is stuck "
            "or gone, or one step takes longer than train.timeout_s"
        )
        os._exit(report_failure(self.spec, self.events, error, [f"dltool watchdog: {error}"]))

    def _log_resources(self, epoch: int, steps: Steps) -> None:
        """One line per epoch in the worker's log (RUN_DIR/logs): a leak shows as a number that keeps growing."""
        usage = resource_usage()
        if usage is not None:
            print(RESOURCE_LINE.format(epoch=epoch, steps=steps.iterations(), **usage), flush=True)

    def _stop_requested(self, steps: Steps) -> bool:
        """Whether run_dir/STOP exists (the tuner pruned this run, or a person asked), agreed by every worker: one
        that looked a moment later must not train an epoch the others skip."""
        seen = np.array([float(self.run_dir.child(ckpt.STOP_FILE).exists())], np.float32)
        return bool(steps.all_reduce(seen)[0] > 0)

    def _build(self, strategy):
        """The model, its optimizer and the compiled step functions, inside the strategy's scope."""
        import keras

        from dltool.train.model import build_model, build_optimizer

        mixed = self.train.mixed_precision and self.gpu
        if mixed:
            keras.mixed_precision.set_global_policy("mixed_float16")
        with strategy.scope(), model_errors():
            model = build_model(self.train, self.manifest, self.job.target_scale)
            optimizer = build_optimizer(self.train, self.job.steps_per_epoch)
            if mixed:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(model.trainable_variables)
        return model, optimizer, Steps(self, strategy, model, optimizer, mixed)

    def _train_epoch(self, epoch: int, batches, steps: Steps, val_feed, writers) -> tuple[dict, dict]:
        """One epoch of steps, with progress reports and mid-epoch validation; its train metrics and timing."""
        import tensorflow as tf

        per_epoch, global_batch = self.job.steps_per_epoch, self.job.global_batch
        every = self.train.validation_every_steps
        started = last_report = time.perf_counter()
        sums, clock = tf.zeros(len(sum_names(self.metrics))), tf.zeros(2, tf.float64)
        step, done = 0, (epoch - 1) * per_epoch  # done: steps of the run so far (validation_every_steps counts them)
        while step < per_epoch:
            # Every worker cuts the epoch into the same calls: their collectives must pair up.
            n = min(self.train.steps_per_execution, per_epoch - step, every - done % every if every else per_epoch)
            call_sums, call_clock = steps.train(batches, tf.constant(n, tf.int32))
            sums, clock = sums + call_sums, clock + call_clock
            step, done = step + n, done + n
            self.watchdog.beat()
            self._inject_fault(epoch)
            now = time.perf_counter()
            if self.chief and (now - last_report >= REPORT_EVERY_S or step == per_epoch):
                last_report = now
                self.events.send("step", epoch=epoch, step=step, steps=per_epoch,
                                 logs=finish(self.metrics, sums.numpy()),
                                 samples_per_s=step * global_batch / (now - started))  # fmt: skip
            if every and done % every == 0 and step != per_epoch:
                logs = self._validate(steps, val_feed)
                self.events.send("validation", epoch=epoch, step=step, logs=logs)
                if writers:
                    self._scalars(writers["val"], logs, steps.iterations(), prefix="val_")
        seconds = time.perf_counter() - started
        timing = {"learning_rate": steps.learning_rate(), "seconds": round(seconds, 3),
                  "samples_per_s": round(per_epoch * global_batch / seconds, 1),
                  **self._input_wait(steps, clock.numpy())}  # fmt: skip
        return {"epoch": epoch, **finish(self.metrics, steps.all_reduce(sums.numpy()))}, timing

    def _input_wait(self, steps: Steps, clock: np.ndarray) -> dict:
        """Each worker's share of its step time spent waiting for the next batch (the feed starving the model):
        `input_wait`, the largest, and `input_wait_workers`, one per rank."""
        shares = np.zeros(self.workers, np.float32)
        shares[self.rank] = clock[0] / max(clock.sum(), 1e-9)
        shares = steps.all_reduce(shares) if self.workers > 1 else shares
        return {"input_wait": round(float(shares.max()), 4), "input_wait_workers": [round(float(v), 4) for v in shares]}

    def _validate(self, steps: Steps, val_feed) -> dict:
        """Exact val metrics summed over every worker's share (after syncing BatchNorm statistics)."""
        steps.sync_moving_statistics()
        if val_feed is None:
            return {}
        total = np.zeros(len(sum_names(self.metrics)), np.float32)
        for x, y in val_feed.one_pass(max(self.job.per_worker_batch, 256)):
            total += steps.evaluate(x, y).numpy()
            self.watchdog.beat()
        return finish(self.metrics, steps.all_reduce(total), prefix="val_")

    def _end_epoch(self, epoch: int, logs: dict, state: RunState, model, optimizer, writers) -> bool:
        """Record the epoch, track the best, checkpoint (chief); whether early stopping says stop."""
        train = self.train
        state.history.append(logs)
        entry, previous = best_epoch_entry(train.monitor, logs, state.best), state.best
        is_best = entry is not None
        if is_best:
            state.best = entry
        # An epoch that beats the best by no more than early_stopping.min_delta is kept but counts as stale.
        min_delta = train.early_stopping.min_delta if train.early_stopping else 0.0
        if is_best and (previous is None or not min_delta or improved(train.monitor, entry["value"], previous["value"],
                                                                      min_delta)):  # fmt: skip
            state.stale = 0
        else:
            state.stale += 1
        stop = train.early_stopping is not None and state.stale >= train.early_stopping.patience
        if self.chief:
            meta = {"epoch": epoch, "logs": logs, "history": state.history, "best": state.best,
                    "stale_epochs": state.stale, "config_hash": self.job.config_hash,
                    "dataset_hash": self.job.dataset_hash,
                    "preprocessing_hash": preprocessing_hash(self.job.manifest)}  # fmt: skip
            saved = self._save_checkpoint(model, optimizer, epoch, meta)
            self._scalars(writers["train"], logs, epoch)
            self._scalars(writers["val"], logs, epoch, prefix="val_")
            if self._tensorboard_copy is not None:
                ckpt.upload_tree(*self._tensorboard_copy)
            self.events.send("epoch", epoch=epoch, epochs=train.epochs, logs=logs, best=is_best,
                             checkpoint=saved, stopped_early=stop)  # fmt: skip
        return stop

    def _finish(self, model, state: RunState, stop: bool, requested: bool, feed) -> None:
        """Keep the model `train.final` names (chief) and report this replica's weight digest."""
        # Every replica reports a digest of its weights: the driver checks they are still in sync.
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(v.numpy()).tobytes() for v in model.weights))
        last = state.history[-1]["epoch"] if state.history else 0
        kept = state.best["epoch"] if self.train.final == "best" and state.best else last
        if self.chief:
            self._save_final(model, kept, last, feed)
        self.events.send("done", epochs_done=len(state.history), best=state.best, stopped_early=stop,
                         stopped_on_request=requested, model_epoch=kept, weights_sha256=digest.hexdigest())  # fmt: skip

    def _inject_fault(self, epoch: int) -> None:
        """The test-only fault hook (`run_training(..., fault=...)`), never part of a config."""
        fault = self.job.fault
        if fault and fault["rank"] == self.rank and fault["epoch"] == epoch and self.job.attempt in fault["attempts"]:
            if fault.get("kind") == "hang":  # a worker that stops answering: its peers' watchdogs end the attempt
                print(f"injected fault: worker {self.rank} hangs in epoch {epoch}", flush=True)
                threading.Event().wait()
            raise InjectedFault(f"injected fault: worker {self.rank} in epoch {epoch}")

    # -- outputs (chief only) ---------------------------------------------------------------------

    def _save_checkpoint(self, model, optimizer, epoch: int, meta: dict) -> str:
        scratch = local_scratch("checkpoint")
        arrays = {"model_count": np.array(len(model.variables)), "optimizer_count": np.array(len(optimizer.variables))}
        arrays.update({f"model_{i}": np.asarray(v.numpy()) for i, v in enumerate(model.variables)})
        arrays.update({f"optimizer_{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)})
        np.savez(scratch / ckpt.STATE_FILE, **arrays)
        model.save(scratch / ckpt.MODEL_FILE)
        checkpoint = ckpt.commit_checkpoint(self.run_dir, epoch, scratch, meta)
        _remove_tree(scratch)
        ckpt.write_history(self.run_dir, meta["history"])
        best = meta["best"]["epoch"] if meta["best"] else None
        ckpt.prune_checkpoints(self.run_dir, self.train.keep_checkpoints, best)
        return checkpoint.name

    def _save_final(self, model, kept: int, last: int, feed) -> None:
        """Write run_dir/model: the model of epoch `kept` (loaded from its checkpoint unless it is the last), and
        unless the job leaves them out (a tuner's trial), its SavedModel and its ONNX copy for scoring, checked on
        rows of `feed` (`write_scoring_copy`)."""
        if kept != last:
            checkpoint = self.run_dir.child(ckpt.CHECKPOINTS, ckpt.epoch_dir_name(kept))
            _load_state(checkpoint, {"model": model.variables})
        scratch = local_scratch("model")
        model.save(scratch / ckpt.MODEL_FILE)
        if self.job.scoring_copies:
            model.export(str(scratch / "saved_model"), format="tf_saved_model", verbose=False)
            self._scoring_copy(scratch, feed)
        if self.manifest.vocabulary is not None:  # text: a model that takes raw strings too
            from dltool.storage.fs import open_location
            from dltool.train.text_layers import save_raw_text_model

            preprocess = open_location(self.job.dataset).child(self.manifest.preprocess).read_bytes()
            save_raw_text_model(model, preprocess, scratch)
        target = self.run_dir.child("model")
        if target.exists():
            target.delete()
        ckpt.upload_tree(scratch, target)
        _remove_tree(scratch)

    def _scoring_copy(self, folder: Path, feed) -> None:
        import contextlib

        import tensorflow as tf

        from dltool.artefacts import CHECK_ROWS, write_scoring_copy

        started = time.monotonic()
        with contextlib.closing(feed.one_pass(CHECK_ROWS)) as batches:
            sample = next(batches, (None, None))[0]
        if sample is not None:
            record = write_scoring_copy(tf, folder, sample)  # a factory's custom layers: registered when built
            print(f"scoring copy: {record.get('reason') or record['file']} ({time.monotonic() - started:.1f} s)", flush=True)

    def _tensorboard(self) -> dict:
        import tensorflow as tf

        target = self.run_dir.child("tensorboard")
        if target.fs.type_name != "local":  # TensorFlow writes only local files: write here, upload after each epoch
            self._tensorboard_copy = (local_scratch("tensorboard"), target)
            root = str(self._tensorboard_copy[0])
        else:
            root = target.uri if "://" in target.uri else target.path
        return {name: tf.summary.create_file_writer(f"{root}/{name}") for name in ("train", "val")}

    @staticmethod
    def _scalars(writer, logs: dict, step: int, prefix: str = "") -> None:
        import tensorflow as tf

        with writer.as_default(step=step):
            for key, value in logs.items():
                if key == "epoch" or not isinstance(value, (int, float)):
                    continue
                if prefix and not key.startswith(prefix):
                    continue
                if not prefix and key.startswith("val_"):
                    continue
                tf.summary.scalar(key[len(prefix):], value)
        writer.flush()


def _load_state(location, groups: dict[str, list]) -> None:
    """Assign a checkpoint's saved values to each group of variables ("model", "optimizer")."""
    scratch = local_scratch("restore")
    try:
        (scratch / ckpt.STATE_FILE).write_bytes(location.child(ckpt.STATE_FILE).read_bytes())
        with np.load(scratch / ckpt.STATE_FILE, allow_pickle=False) as state:
            for group, variables in groups.items():
                count = int(state[f"{group}_count"])
                if count != len(variables):
                    raise DltoolError(
                        f"{location.uri}: checkpoint has {count} {group} variables, this model has {len(variables)}; "
                        "the config changed since it was written: use a new run dir or --overwrite"
                    )
                for i, variable in enumerate(variables):
                    value = state[f"{group}_{i}"]
                    if tuple(value.shape) != tuple(variable.shape):
                        raise DltoolError(
                            f"{location.uri}: {group} variable {variable.path}: checkpoint shape {list(value.shape)}, "
                            f"model shape {list(variable.shape)}; use a new run dir or --overwrite"
                        )
                    variable.assign(value)
    finally:
        _remove_tree(scratch)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    exit_code = main()
    if exit_code != 0:
        # A failed worker exits as Python does. Where a peer died, the task of the one that died must report
        # first (Spark's error names the first failure): this worker only saw the broken collective.
        sys.exit(exit_code)
    # Every output is written and closed, and the task waits for this exit: skip the interpreter's teardown,
    # where TensorFlow's took 1.1 s after each run (measured).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
