"""Run TensorFlow workers as one Spark barrier stage: one task per worker, each in a child process.

A one-worker CPU run that asks for it (`TrainJob.reuse_worker`: the tuner's trials, Spark ML fits) leaves its
child to the next such run of the same Spark Python worker, with TensorFlow loaded (`_KEPT`); every other child
serves one run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from dltool.config.redaction import redact_text
from dltool.errors import ConfigError, DltoolError, ErrorRecord
from dltool.spark.shipping import with_code_path
from dltool.storage.stores import STORAGE_ENV

if TYPE_CHECKING:
    from dltool.train.job import TrainJob

TAIL_LINES = 30
LOG_LINES = 20_000  # a worker's log in the run dir keeps its last lines (prints in a factory, TF warnings)


def task_slots(spark) -> int:
    """How many tasks the cluster can run at once now (what a barrier stage needs)."""
    sc = spark.sparkContext
    try:
        jsc = sc._jsc.sc()
        return int(jsc.maxNumConcurrentTasks(jsc.resourceProfileManager().defaultResourceProfile()))
    except Exception:  # noqa: BLE001 - older or foreign Spark builds: fall back to the scheduler's estimate
        return max(1, sc.defaultParallelism)


CONTAINER_PATIENCE_S = 300.0  # YARN and Kubernetes: a container's first start unpacks the shipped environment


def wait_for_slots(spark, wanted: int | None, patience_s: float = 30.0) -> int:
    """Task slots once executors have registered: `wanted` of them, or a count that holds still for 2 s.

    A new application on a cluster starts with no executors; on a standalone cluster they register
    within seconds. On YARN and Kubernetes a container's first start on a node can take minutes (it
    localizes the packed Python environment), so they get CONTAINER_PATIENCE_S, unless the executors
    the config asks for could never give `wanted` slots. Local mode has its slots at once.
    """
    slots = task_slots(spark)
    sc = spark.sparkContext
    if sc.master.startswith("local"):
        return slots
    if sc.master.startswith(("yarn", "k8s")):
        asked = _asked_slots(sc.getConf())
        if wanted is not None and asked is not None and asked < wanted:
            return slots  # check_slots says so now, not in five minutes
        patience_s = max(patience_s, CONTAINER_PATIENCE_S)
    import threading

    tick = threading.Event()  # wait() with a timeout: a poll interval, not a synchronisation
    deadline = time.monotonic() + patience_s
    steady_since, last = time.monotonic(), slots
    while time.monotonic() < deadline:
        if wanted is not None and slots >= wanted:
            break
        if wanted is None and slots > 0 and time.monotonic() - steady_since >= 2.0:
            break
        tick.wait(0.25)
        slots = task_slots(spark)
        if slots != last:
            steady_since, last = time.monotonic(), slots
    return slots


def _asked_slots(conf) -> int | None:
    """Slots the configured executors give once all are up; None when dynamic allocation decides."""
    if conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true":
        return None
    try:
        instances = int(conf.get("spark.executor.instances", "2"))  # YARN's and Kubernetes' default is 2
        return instances * (int(conf.get("spark.executor.cores", "1")) // max(1, int(conf.get("spark.task.cpus", "1"))))
    except ValueError:
        return None


def check_slots(spark, workers: int, slots: int | None = None) -> None:
    """Fail at once when a barrier stage could not start (Spark itself would wait minutes)."""
    slots = task_slots(spark) if slots is None else slots
    if workers > slots:
        master = spark.sparkContext.master
        raise ConfigError(
            f"train.workers is {workers} but the cluster ({master}) has {slots} free task slot(s); "
            "lower --workers or add executors/cores (a barrier stage needs a slot per worker)"
        )


def barrier_train(spark, job: TrainJob, workers: int, description: str = "dltool train") -> None:
    """Run one barrier stage of `workers` tasks; raises the Spark error when any worker fails.

    A failed worker's task raises its dltool error again ("worker 1: ..."), so the Spark error
    carries it to the driver (errors.map_errors reads it back).
    """
    sc = spark.sparkContext
    sc.setJobGroup(job.job_group, description, interruptOnCancel=True)

    def task(_partition):
        from dltool.train.barrier import run_worker_task

        yield run_worker_task(job)

    try:
        sc.parallelize(range(workers), workers).barrier().mapPartitions(task).collect()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)


def _child_env(job: TrainJob, scratch: str, gpus: list[str]) -> dict[str, str]:
    """The worker child's environment: a copy of this task's (never changed), with its temp folder, dltool's
    code on the path, its storage settings and its GPUs."""
    env = dict(os.environ)
    env.update(
        TMPDIR=scratch,
        TF_CPP_MIN_LOG_LEVEL="2",
        # Absolute: shipped code sits at relative paths (./dltool.zip) and the child runs elsewhere.
        PYTHONPATH=os.pathsep.join(os.path.abspath(p) for p in sys.path if p),
        PYTHONUNBUFFERED="1",
        DLTOOL_PARENT_PID=str(os.getpid()),  # the child ties its life to this process (see worker.die_with_parent)
    )
    # Local mode: the config's own code from where it lies, ahead of the copy shipped at the session's start.
    env = with_code_path(env, Path(job.user_code) if job.user_code else None)
    env.pop("TF_CONFIG", None)
    env[STORAGE_ENV] = json.dumps(job.storage or {})
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return env


MAX_RUNS = 20  # runs one kept worker process serves (it grows by about 10 MB a run), then a fresh one takes over


class WorkerProcess:
    """`python -m dltool.train.worker --serve` (see worker.serve): it starts importing TensorFlow at once."""

    def __init__(self, env: dict[str, str], key: str):
        self.key, self.runs = key, 0
        self.child = subprocess.Popen(
            [sys.executable, "-m", "dltool.train.worker", "--serve"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
            env=env, cwd=env["TMPDIR"], text=True, errors="replace",
        )  # fmt: skip

    def run(self, request: dict, lines: deque, keep: bool) -> tuple[int, int]:
        """Send one run and relay its output into `lines`; (exit code, lines seen). Without `keep` the process
        ends after the run (stdin closed); a run that fails ends it too."""
        from dltool.train.job import RUN_DONE

        self.runs += 1
        try:
            self.child.stdin.write(json.dumps(request) + "\n")
            self.child.stdin.flush()
            if not keep:
                self.child.stdin.close()
        except BrokenPipeError:  # the child died early: its output below says why
            pass
        seen, code = 0, None
        for line in self.child.stdout:
            if line.startswith(RUN_DONE):
                code = int(line[len(RUN_DONE):])
                if keep and code == 0:
                    return code, seen
                continue  # the process ends now: what it prints until then is still its log
            lines.append(line.rstrip())
            seen += 1
        exit_code = self.child.wait()
        # No end line: killed, crashed or gone (os._exit(0) in a factory), never a success.
        return (exit_code or 1) if code is None else code, seen

    def reusable(self, key: str) -> bool:
        return self.key == key and self.runs < MAX_RUNS and self.child.poll() is None

    def stop(self) -> None:
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait()


_KEPT: list[WorkerProcess] = []  # this Spark Python worker's idle kept child: none or one


def _worker_process(env: dict[str, str], keep: bool, threads: int, user_code: str | None) -> WorkerProcess:
    """The kept child when it runs with this environment (it loaded code from it), else a new child."""
    fixed = {k: v for k, v in env.items() if k not in ("TMPDIR", "DLTOOL_PARENT_PID")}
    stamp = os.stat(user_code).st_mtime_ns if user_code and os.path.exists(user_code) else None
    key = json.dumps([fixed, threads, user_code, stamp], sort_keys=True)  # TensorFlow's threads are set once
    kept = _KEPT.pop() if _KEPT else None
    if kept is not None and keep and kept.reusable(key):
        return kept
    if kept is not None:
        kept.stop()
    return WorkerProcess(env, key)


def run_worker_task(job: TrainJob) -> int:
    """Inside a barrier task: start the worker child (or take the kept one), agree on addresses meanwhile, relay
    its failure.

    The child imports TensorFlow while the tasks publish their addresses; the run, with the cluster spec
    (TF_CONFIG), follows on its stdin. A child that fails leaves its ErrorRecord in a file; one killed or
    crashed leaves none.
    """
    import shutil
    import tempfile

    from pyspark import BarrierTaskContext

    from dltool.train.job import WorkerSpec

    ctx = BarrierTaskContext.get()
    rank = ctx.partitionId()
    infos = ctx.getTaskInfos()
    host = infos[rank].address.rsplit(":", 1)[0] or "127.0.0.1"
    gpus = list(ctx.resources()["gpu"].addresses) if "gpu" in ctx.resources() else []
    scratch = tempfile.mkdtemp(prefix=f"dltool-worker-{rank}-")
    error_path = os.path.join(scratch, "error.json")
    spec = WorkerSpec.for_rank(job, rank, len(infos), _task_cpus(ctx), error_file=error_path)
    spec_path = os.path.join(scratch, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec.to_json(), f)
    # A kept child holds TensorFlow's memory: on a GPU another run's process would need it.
    keep = job.reuse_worker and len(infos) == 1 and not gpus
    process = _worker_process(_child_env(job, scratch, gpus), keep, spec.threads, job.user_code)
    lines: deque[str] = deque(maxlen=LOG_LINES)
    code, seen = None, 0
    try:
        cluster = ""  # one worker has no peers; its barrier round trip took 1 s in one of two Python workers
        if len(infos) > 1:
            addresses = ctx.allGather(f"{host}:{_free_port(host)}")
            cluster = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": rank}})
        request = {"spec": spec_path, "scratch": scratch, "cluster": cluster, "keep": keep}
        code, seen = process.run(request, lines, keep)
        failure = _worker_error(error_path) if code != 0 else None
    finally:
        if keep and code == 0 and process.child.poll() is None:
            _KEPT.append(process)
        else:
            process.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        _save_log(job, rank, lines, seen)
    if failure is not None:
        failure.raise_(f"worker {rank}")
    if code != 0:
        last = list(lines)[-TAIL_LINES:]
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        # The first line is what the driver shows. The child's last output follows for the Spark
        # UI, marked so that none of it reads as an error line of Spark's message.
        tail = "".join(f"\n  | {line}" for line in last)
        raise DltoolError(f"dltool worker {rank} {how}: {death_reason(last, code)}{tail}")
    return rank


# What a native crash leaves in the log, and what it means to the user; most specific first.
_CRASH_CAUSES = (
    ("Resource temporarily unavailable", "could not create a thread: Resource temporarily unavailable "
                                         "(the process or user thread limit, ulimit -u, was reached)"),
    ("std::bad_alloc", "out of memory (std::bad_alloc)"),
    ("Cannot allocate memory", "out of memory (Cannot allocate memory)"),
)


def death_reason(lines: list[str], code: int) -> str:
    """Why a worker died without a dltool error, in one line, from the last lines of its output."""
    tail = [line.strip() for line in lines if line.strip()]
    text = "\n".join(tail)
    for needle, reason in _CRASH_CAUSES:
        if needle in text:
            return reason
    for line in reversed(tail):
        if "what():" in line:  # a C++ exception nobody caught: "terminate called ... what():  <message>"
            return line.split("what():", 1)[1].strip()
        if line.startswith("Fatal Python error") or "Check failed" in line:
            return line
    if code == -signal.SIGKILL:
        return "killed from outside, without a word (out of memory, or stopped by the cluster manager)"
    return tail[-1] if tail else "it printed nothing"


def _worker_error(path: str) -> ErrorRecord | None:
    try:
        with open(path) as f:
            return ErrorRecord.from_json(json.load(f))
    except (OSError, ValueError, KeyError):  # none written: the child was killed or crashed
        return None


def attempt_logs(run_dir, attempt: int):
    """The folder of an attempt's worker logs, RUN_DIR/logs/attempt-N (attempt 0 is attempt-1)."""
    return run_dir.child("logs", f"attempt-{attempt + 1}")


def _save_log(job: TrainJob, rank: int, lines: deque, seen: int) -> None:
    """Write the worker's output to the run dir; a failure to write must not hide the worker's own."""
    from dltool.storage.fs import open_location
    from dltool.storage.stores import storage_scope

    dropped = seen - len(lines)
    text = redact_text((f"[... {dropped} earlier lines dropped ...]\n" if dropped else "") + "\n".join(lines) + "\n")
    with storage_scope(job.storage):
        target = attempt_logs(open_location(job.run_dir), job.attempt).child(f"worker-{rank}.log")
    try:
        target.fs.create_dir(target.path.rsplit("/", 1)[0], recursive=True)
        target.write_bytes(text.encode("utf-8", "replace"))
    except Exception as e:  # noqa: BLE001 - storage errors of any kind: the log is a convenience
        print(f"dltool: cannot write {target.uri}: {type(e).__name__}: {e}", file=sys.stderr)  # the executor's log


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _task_cpus(ctx) -> int:
    try:
        return max(1, int(ctx.cpus()))
    except Exception:  # noqa: BLE001
        return 1
