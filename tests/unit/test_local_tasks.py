"""A local master's tasks run in this process: forked processes keep order, raise a task's error as its dltool
class (a foreign one named), and turn a child's death into one line; threads run in the caller's context."""

from __future__ import annotations

import contextvars
import os
import signal

import pytest

from dltool.errors import ConfigError, DltoolError, RecordError
from dltool.spark.local import map_in_processes, map_in_threads

SCOPE = contextvars.ContextVar("scope", default="none")


def _square_with_pid(n: int) -> tuple[int, int]:
    return n * n, os.getpid()


def _fail_on_three(n: int) -> int:
    if n == 3:
        raise RecordError("decode", f"item {n} is bad")  # its two arguments would not survive an exception's pickling
    if n == 4:
        raise ConfigError(f"item {n}: no such column\n(details)")
    return n


def _die_on_two(n: int) -> int:
    if n == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer or a segfaulting decoder would end it
    return n


def test_forked_processes_return_every_result_in_order():
    results = map_in_processes(_square_with_pid, list(range(20)), 2, False, "squares")
    assert [square for square, _ in results] == [n * n for n in range(20)]
    assert os.getpid() not in {pid for _, pid in results} and len({pid for _, pid in results}) <= 2


def test_a_tasks_error_comes_back_as_one_line_and_a_dead_child_too():
    with pytest.raises(DltoolError, match="^RecordError: item 3 is bad$"):
        map_in_processes(_fail_on_three, list(range(4)), 2, False, "items")
    with pytest.raises(ConfigError, match="^item 4: no such column$"):
        map_in_processes(_fail_on_three, [4, 5], 2, False, "items")
    with pytest.raises(DltoolError, match="^ingest x: a worker process died .*crash in native code"):
        map_in_processes(_die_on_two, list(range(6)), 2, False, "ingest x")


def _records(partition):
    for rank, value in partition:
        yield {"rank": rank, "value": value, "scope": SCOPE.get()}


def test_threads_see_the_callers_context():
    token = SCOPE.set("verb's storage")
    try:
        records = map_in_threads(_records, [(0, "a"), (1, "b"), (2, "c")], False, "score")
    finally:
        SCOPE.reset(token)
    assert records == [{"rank": i, "value": v, "scope": "verb's storage"} for i, v in enumerate("abc")]
