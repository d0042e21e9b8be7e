"""ingest -> train (2 barrier workers = 2 executors) -> eval against a real standalone cluster, and a killed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT


def dltool(*args) -> tuple[int, dict | None, str]:
    """The real CLI in its own process (its own Spark application on the cluster)."""
    result = subprocess.run([sys.executable, "-m", "dltool.cli", *map(str, args), "--json"],
                            capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    summary = json.loads(result.stdout) if result.stdout.strip() else None
    return result.returncode, summary, result.stderr[-3000:]


@pytest.fixture(scope="module")
def churn_on_cluster(standalone_cluster, tmp_path_factory):
    """Write a config for the cluster and ingest the sample CSV once; returns a config writer."""
    folder = tmp_path_factory.mktemp("cluster-churn")
    base = yaml.safe_load((ROOT / "configs" / "csv.yaml").read_text())
    base["ingest"]["input"] = str(ROOT / "sample_data" / "tabular" / "customers.csv")
    base["dataset"]["path"] = str(folder / "churn")
    base["spark"] = {"master": standalone_cluster, "conf": {"spark.executor.memory": "1g"}}

    def write(name: str, **train) -> Path:
        data = json.loads(json.dumps(base))
        data["train"].update(run_dir=str(folder / name), workers=2, **train)
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    code, summary, err = dltool("ingest", write("ingest"))
    assert code == 0, err
    assert summary["counts"]["ok"] == summary["counts"]["inputs"] == 400
    return write, folder


def test_csv_experiment_trains_and_evaluates_on_the_cluster(churn_on_cluster):
    write, folder = churn_on_cluster
    config = write("run", epochs=2)
    code, summary, err = dltool("train", config)
    assert code == 0, err
    assert summary["workers"] == 2 and summary["epochs_done"] == 2 and summary["replicas_in_sync"] == 2

    code, summary, err = dltool("eval", config, "--checkpoint", "all")
    assert code == 0, err
    assert [c["epoch"] for c in summary["checkpoints"]] == [1, 2]
    rows = json.loads((folder / "churn" / "_manifest.json").read_text())["splits"]["test"]["rows"]
    assert summary["checkpoints"][0]["metrics"]["examples"] == rows


def _worker_pid(rank: int) -> int | None:
    """The PID of a running `dltool.train.worker` child of the given rank (its spec lives in dltool-worker-RANK-*)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"dltool.train.worker" in args and any(f"dltool-worker-{rank}-".encode() in a for a in args):
            return int(entry.name)
    return None


def test_a_killed_training_worker_is_replaced_from_the_last_checkpoint(churn_on_cluster):
    write, folder = churn_on_cluster
    config = write("killed", epochs=3, steps_per_epoch=400, max_retries=2, timeout_s=30)
    train = subprocess.Popen([sys.executable, "-m", "dltool.cli", "train", str(config), "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    first = folder / "killed" / "checkpoints" / "epoch-001" / "checkpoint.json"
    tick = threading.Event()  # polls real state (a checkpoint file, a PID), never a guessed delay
    deadline = time.monotonic() + 300
    while not first.exists() and train.poll() is None and time.monotonic() < deadline:
        tick.wait(0.1)
    pid = _worker_pid(1)
    assert first.exists() and pid is not None, "training did not reach epoch 2"
    os.kill(pid, signal.SIGKILL)  # worker 1 dies in the middle of epoch 2
    killed_at = time.monotonic()
    out, err = train.communicate(timeout=600)
    recovery = time.monotonic() - killed_at
    assert train.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["attempts"] == 2 and summary["epochs_done"] == 3
    history = [json.loads(line) for line in (folder / "killed" / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert "dltool worker 1 was killed by SIGKILL" in err, err[-3000:]
    import keras

    assert keras.models.load_model(folder / "killed" / "model" / "model.keras").output_shape == (None, 2)
    print(f"worker killed -> run finished in {recovery:.1f}s")


def test_spark_submit_runs_train_on_the_cluster(churn_on_cluster, standalone_cluster):
    import pyspark

    write, _ = churn_on_cluster
    config = write("submitted", epochs=1)
    home = Path(pyspark.__file__).parent
    script = subprocess.run([sys.executable, "-m", "dltool.where"], capture_output=True, text=True, check=True)
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}  # fmt: skip
    result = subprocess.run(
        [str(home / "bin" / "spark-submit"), "--master", standalone_cluster, "--conf", "spark.executor.memory=1g",
         script.stdout.strip(), "train", str(config), "--json"],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["status"] == "completed" and summary["workers"] == 2 and summary["epochs_done"] == 1
