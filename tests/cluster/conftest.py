"""A real Spark standalone cluster on 127.0.0.1: one master and two 1-core workers, started once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

WORKERS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _master_state(ui_port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as response:
            return json.load(response)
    except (OSError, ValueError):  # not listening yet, or a half-started UI answering with no JSON
        return None


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    """The master URL of a running cluster; master and workers are stopped by PID at the end."""
    import pyspark

    home = Path(pyspark.__file__).parent
    work = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_WORKER_DIR": str(work)}
    port, ui_port = _free_port(), _free_port()
    spark_class = str(home / "bin" / "spark-class")
    logs = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(work / f"{name}.log", "w")
        logs.append(log)
        return subprocess.Popen([spark_class, *args], env=env, stdout=log, stderr=subprocess.STDOUT)

    processes = [start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                       "--port", str(port), "--webui-port", str(ui_port))]  # fmt: skip
    url = f"spark://127.0.0.1:{port}"
    for i in range(WORKERS):
        processes.append(start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                               "--cores", "1", "--memory", "2g", "--webui-port", "0",
                               "--work-dir", str(work / f"worker{i}")))  # fmt: skip
    tick = threading.Event()  # a poll interval on the master's own status, not a guess at start-up time
    deadline = time.monotonic() + 120
    try:
        while True:
            state = _master_state(ui_port)
            alive = [w for w in (state or {}).get("workers", []) if w.get("state") == "ALIVE"]
            if len(alive) == WORKERS:
                break
            dead = [p.args[1] for p in processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"standalone cluster did not start (exited: {dead}); logs in {work}")
            tick.wait(0.5)
        yield url
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/cluster" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)
