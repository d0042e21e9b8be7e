"""Work a local master would run in Spark tasks, run in this process's threads or forked processes instead.

On a local master Spark's tasks are Python processes on this machine, and a command's first job waits for them to
start and import (1.3-2 s here, docs/benchmarks.md), after the JVM's own start. Work that needs nothing of Spark but
its cores runs the same task function with no session: scoring an ONNX copy in threads (onnxruntime, Arrow and numpy
release the GIL), decoding local files in processes forked from this one (they start with its imports, in
milliseconds, and a decoder that crashes takes down a child, not the command).
"""

from __future__ import annotations

import contextvars
import importlib
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dltool.config.models import SparkSettings
from dltool.errors import DltoolError, ErrorRecord


def local_cores(settings: SparkSettings) -> int:
    """The cores of the local master this process runs Spark on (the active context's, else `settings.master`'s);
    0 on a cluster, or under spark-submit (its --master rules)."""
    context = sys.modules["pyspark"].SparkContext._active_spark_context if "pyspark" in sys.modules else None
    if context is None and "PYSPARK_GATEWAY_PORT" in os.environ:
        return 0
    return master_cores(context.master if context is not None else settings.master)


def master_cores(master: str) -> int:
    """A local master's cores (local, local[4], local[*], local[4,2]); 0 for any other master."""
    local = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if local is None:  # local-cluster[...], spark://, yarn, k8s://
        return 0
    cores = local.group(1)  # None for "local": one core
    return (os.cpu_count() or 1) if cores == "*" else int(cores or 1)


def map_in_threads(task: Callable[[Iterator], Iterator[dict]], payload: list, progress: bool, description: str) -> list[dict]:
    """`task`'s records for each item of `payload`, as `mapPartitions(task)` over one partition an item would give
    them, each item run in a thread. Daemon threads: an interrupted command does not wait for them. `task` returns
    its errors as records, as it does in a Spark task."""
    from dltool.spark.progress import thread_progress

    records: list[list[dict] | None] = [None] * len(payload)
    finished = threading.Semaphore(0)

    def run(index: int) -> None:
        try:
            records[index] = list(task(iter([payload[index]])))
        finally:
            finished.release()

    with thread_progress(description, len(payload), enabled=progress) as advance:
        for index in range(len(payload)):
            # each in a copy of this thread's context: the verb's storage scope (endpoints, `storage:`) holds there too
            threading.Thread(target=contextvars.copy_context().run, args=(run, index), name=f"dltool-task-{index}",
                             daemon=True).start()  # fmt: skip
        for _ in payload:
            finished.acquire()
            advance()
    if any(part is None for part in records):  # only a BaseException escapes a task's records of errors
        raise DltoolError(f"{description} failed: a thread stopped without a result")
    return [record for part in records for record in part]


def map_in_processes(task: Callable[[Any], Any], items: list, processes: int, progress: bool, description: str,
                     modules: tuple[str, ...] = ()) -> list:  # fmt: skip
    """`[task(item) for item in items]`, as `parallelize(items).map(task).collect()` gives it on a local master:
    in `processes` processes forked from this one, items started in order. A task's error comes back as an
    `ErrorRecord` and is raised here as the same dltool class, one line (a foreign one as a DltoolError naming it);
    a child that dies (killed, out of memory, a crash in native code) fails the call with one line. `modules`:
    imported here first, as a session's warm-up imports them in its workers, so that every child starts with
    them instead of importing them itself (a decoder such as cv2, or a table reader's pandas, takes each child
    0.1-0.3 s).

    Forked before any thread of this call starts (the progress bar's): call it where no other thread holds a lock
    the children need, with local files only (an object store's client is not fork-safe). A library thread pool
    that a child cannot inherit is taken down for the fork (`_fork_safe`)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from dltool.spark.progress import thread_progress

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a broken library is the tasks' to report, with the record it failed on
            pass
    pool = ProcessPoolExecutor(max(1, min(processes, len(items))), mp_context=multiprocessing.get_context("fork"))
    finished = False
    try:
        with _fork_safe():  # every child is forked now, before the bar's thread starts
            futures = [pool.submit(_guarded, task, item) for item in items]
        with thread_progress(description, len(items), enabled=progress) as advance:
            for future in as_completed(futures):
                done, value = future.result()
                if not done:  # the first error, as soon as it happens
                    value.raise_()
                advance()
        finished = True
        return [future.result()[1] for future in futures]
    except BrokenProcessPool as e:
        raise DltoolError(f"{description}: a worker process died (killed, out of memory, or a crash in native code); "
                          "rerun, and if it dies again on the same inputs run them on Spark (a cluster master)") from e
    finally:
        if not finished:  # no child goes on writing into what the caller is about to remove
            for child in list((getattr(pool, "_processes", None) or {}).values()):
                child.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _fork_safe() -> Iterator[None]:
    """OpenCV's thread pool, where this process has used one (a caller of the Python API that resized images
    first), taken down while the children are forked and set back after: a child inherits the idle workers' wait
    on a condition variable with no thread left to end it, and hangs for good in its first call that touches
    the pool (`cv2.setNumThreads`, a parallel resize)."""
    cv2 = sys.modules.get("cv2")  # not imported: no pool
    threads = cv2.getNumThreads() if cv2 is not None else 1
    if threads > 1:
        cv2.setNumThreads(1)
    try:
        yield
    finally:
        if threads > 1:
            cv2.setNumThreads(threads)


def _guarded(task: Callable[[Any], Any], item: Any) -> tuple[bool, Any]:
    """In the child: (True, the task's result), or (False, its error as an ErrorRecord), which pickles whatever the
    error's class takes (an exception's own pickling loses arguments past the message)."""
    try:
        return True, task(item)
    except Exception as e:  # noqa: BLE001 - every error crosses back as a record, as from a Spark task
        return False, ErrorRecord.from_exception(e)
