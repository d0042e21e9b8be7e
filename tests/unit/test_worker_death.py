"""Why a training worker died, in one line, from the last lines of its output (no Spark, no TensorFlow)."""

from __future__ import annotations

import signal
import threading

import pytest

from dltool.train.barrier import death_reason
from dltool.train.worker import Watchdog, resource_usage

THREAD_LIMIT = [
    "Epoch 19 step 80",
    "terminate called after throwing an instance of 'std::system_error'",
    "  what():  Resource temporarily unavailable",
]


@pytest.mark.parametrize(
    ("lines", "code", "reason"),
    [
        (THREAD_LIMIT, -signal.SIGABRT, "could not create a thread: Resource temporarily unavailable"),
        (["terminate called after throwing an instance of 'std::bad_alloc'", "  what():  std::bad_alloc"],
         -signal.SIGABRT, "out of memory (std::bad_alloc)"),
        (["terminate called after throwing an instance of 'std::runtime_error'", "  what():  ring broken"],
         -signal.SIGABRT, "ring broken"),
        (["Fatal Python error: Segmentation fault", "", "Current thread 0x01 (most recent call first):", "  File x"],
         -signal.SIGSEGV, "Fatal Python error: Segmentation fault"),
        (["step 3"], -signal.SIGKILL, "killed from outside"),
        ([], -signal.SIGTERM, "it printed nothing"),
        (["last words", ""], 1, "last words"),
    ],
)
def test_a_dead_worker_says_why_in_one_line(lines, code, reason):
    said = death_reason(lines, code)
    assert said.startswith(reason) and "\n" not in said


def test_the_watchdog_fires_once_without_beats_and_watches_nothing_for_one_worker():
    fired = []
    done = threading.Event()

    def on_stall(idle):
        fired.append(idle)
        done.set()

    with Watchdog(0.2, on_stall):
        assert done.wait(5.0)
    assert len(fired) == 1 and fired[0] > 0.2

    quiet = []
    with Watchdog(None, quiet.append) as idle_watchdog:  # one worker: nothing to watch, no thread
        idle_watchdog.beat()
    assert quiet == [] and not idle_watchdog._thread.is_alive()


def test_resource_usage_reads_this_process():
    usage = resource_usage()
    assert usage is not None
    assert usage["threads"] >= 1 and usage["open_files"] >= 3 and usage["rss_mb"] > 10
