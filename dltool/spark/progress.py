"""A rich progress bar on stderr that follows the Spark tasks of one job group, or tasks run in threads."""

from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager


@contextmanager
def spark_progress(spark, description: str, enabled: bool = True):
    """Run the body's Spark jobs under a job group and show their finished/total tasks."""
    sc = spark.sparkContext
    group = f"dltool-{uuid.uuid4().hex[:8]}"
    sc.setJobGroup(group, description)
    if not enabled:
        try:
            yield
        finally:
            sc.setLocalProperty("spark.jobGroup.id", None)
        return
    progress = _tasks_bar()
    bar = progress.add_task(description, total=None)
    stop = threading.Event()

    def update() -> None:
        tracker = sc.statusTracker()
        done = total = 0
        for job_id in tracker.getJobIdsForGroup(group):
            job = tracker.getJobInfo(job_id)
            for stage_id in job.stageIds if job else ():
                stage = tracker.getStageInfo(stage_id)
                if stage:
                    done += stage.numCompletedTasks
                    total += stage.numTasks
        if total:
            progress.update(bar, completed=done, total=total)

    def follow() -> None:
        while not stop.wait(0.3):
            update()

    watcher = threading.Thread(target=follow, daemon=True)
    with progress:
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()
            update()
            sc.setLocalProperty("spark.jobGroup.id", None)


@contextmanager
def thread_progress(description: str, total: int, enabled: bool = True):
    """The same bar for `total` tasks run in this process's threads: yields the function that marks one done."""
    if not enabled:
        yield lambda: None
        return
    progress = _tasks_bar()
    bar = progress.add_task(description, total=total)
    with progress:
        yield lambda: progress.advance(bar)


def _tasks_bar():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tasks"),
        TimeElapsedColumn(), console=Console(stderr=True), transient=False,
    )  # fmt: skip
