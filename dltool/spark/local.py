"""Work a local master would run in Spark tasks, run in this process's threads instead.

On a local master Spark's tasks are Python processes on this machine, and a command's first job waits for them to
start and import (1.3-2 s here, docs/benchmarks.md). Work that needs nothing of Spark but its cores (scoring an
ONNX copy: onnxruntime, Arrow and numpy release the GIL) runs the same task function in threads, with no session.
"""

from __future__ import annotations

import contextvars
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator

from dltool.config.models import SparkSettings
from dltool.errors import DltoolError


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
