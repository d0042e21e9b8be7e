"""A real Spark standalone cluster on 127.0.0.1: one master and two 1-core workers, started once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

WORKERS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Cluster:
    url: str  # spark://127.0.0.1:PORT
    ui_port: int

    def state(self) -> dict:
        """The master's /json/ status: workers, activeapps (with their cores), completedapps."""
        return _master_state(self.ui_port) or {}

    def active_apps(self) -> list[dict]:
        return self.state().get("activeapps", [])


def _master_state(ui_port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as response:
            return json.load(response)
    except (OSError, ValueError):  # not listening yet, or a half-started UI answering with no JSON
        return None


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    """A running cluster (its master URL and status); master and workers are stopped by PID at the end."""
    import pyspark

    home = Path(pyspark.__file__).parent
    work = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_WORKER_DIR": str(work)}
    port, ui_port = _free_port(), _free_port()
    spark_class = str(home / "bin" / "spark-class")
    logs = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(work / f"{name}.log", "w")  # noqa: SIM115 - closed once the processes stop
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
        yield Cluster(url, ui_port)
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


@pytest.fixture(scope="session")
def executor_python(tmp_path_factory) -> str:
    """A Python for executors with every dependency but not dltool, like a cluster's own nodes.

    A bare venv whose one .pth line adds this venv's site-packages: the packages import, but the
    .pth files inside that folder (dltool's editable install) are not processed, so executors can
    only run dltool as the driver ships it.
    """
    env = tmp_path_factory.mktemp("executor-env")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    purelib = sysconfig.get_paths(vars={"base": str(env), "platbase": str(env)})["purelib"]
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = str(env / "bin" / "python")
    probe = subprocess.run([python, "-c", "import pyarrow, tensorflow, pyspark; import dltool"],
                           capture_output=True, text=True, cwd=env, check=False)  # fmt: skip
    assert "No module named 'dltool'" in probe.stderr, probe.stderr[-2000:]
    return python


@pytest.fixture(scope="session")
def cluster_env(executor_python) -> dict[str, str]:
    """The environment of a dltool command whose executors run executor_python."""
    return {**os.environ, "PYSPARK_PYTHON": executor_python, "TF_CPP_MIN_LOG_LEVEL": "3"}


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/cluster" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)
