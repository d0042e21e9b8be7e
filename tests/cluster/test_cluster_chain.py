"""ingest -> train (2 barrier workers = 2 executors) -> eval against a real standalone cluster, and a killed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.cluster.cli import dltool, process_pids, spark_submit, start
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def churn_on_cluster(standalone_cluster, cluster_env, tmp_path_factory):
    """Write a config for the cluster and ingest the sample CSV once, through spark-submit; returns a config writer."""
    folder = tmp_path_factory.mktemp("cluster-churn")
    base = yaml.safe_load((ROOT / "configs" / "csv.yaml").read_text())
    base["ingest"]["input"] = str(ROOT / "sample_data" / "tabular" / "customers.csv")
    base["dataset"]["path"] = str(folder / "churn")
    base["spark"] = {"master": standalone_cluster.url, "conf": {"spark.executor.memory": "1g"}}

    def write(name: str, **train) -> Path:
        data = json.loads(json.dumps(base))
        data["train"].update({"run_dir": str(folder / name), "workers": 2, **train})
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    code, summary, err = spark_submit(standalone_cluster.url, cluster_env, "ingest", write("ingest"))
    assert code == 0, err
    assert summary["counts"]["ok"] == summary["counts"]["inputs"] == 400
    return write, folder


def test_csv_experiment_trains_and_evaluates_on_the_cluster(churn_on_cluster, cluster_env):
    write, folder = churn_on_cluster
    config = write("run", epochs=2)
    code, summary, err = dltool(cluster_env, "train", config)
    assert code == 0, err
    assert summary["workers"] == 2 and summary["epochs_done"] == 2 and summary["replicas_in_sync"] == 2

    code, summary, err = dltool(cluster_env, "eval", config, "--checkpoint", "all")
    assert code == 0, err
    assert [c["epoch"] for c in summary["checkpoints"]] == [1, 2]
    rows = json.loads((folder / "churn" / "_manifest.json").read_text())["splits"]["test"]["rows"]
    assert summary["checkpoints"][0]["metrics"]["examples"] == rows


def test_a_four_trial_study_runs_two_trials_at_once_on_the_cluster(churn_on_cluster, cluster_env):
    write, folder = churn_on_cluster
    config = write("tune", epochs=2, workers=1)
    data = yaml.safe_load(config.read_text())
    data["tune"] = {"trials": 4, "sampler": "random", "pruner": "none",
                    "space": {"train.optimizer.learning_rate": {"loguniform": [1.0e-3, 1.0e-1]}}}  # fmt: skip
    config.write_text(yaml.safe_dump(data))
    code, summary, err = dltool(cluster_env, "tune", config)
    assert code == 0, err
    trials = summary["trials"]
    assert [t["state"] for t in trials] == ["complete"] * 4 and all(t["epochs"] == 2 for t in trials)
    # parallel defaults to the cluster's slots / one trial's workers: 2 executors, 2 trials at once
    assert any(a["started"] < b["finished"] and b["started"] < a["finished"] for a in trials for b in trials if a is not b)
    best = summary["best"]
    assert best["value"] == max(t["value"] for t in trials)
    run = json.loads((folder / "tune" / "tune" / f"trial-{best['number']:03d}" / "run.json").read_text())
    assert run["workers"] == 1 and run["status"] == "completed"


def _worker_pid(rank: int) -> int | None:
    """The PID of a running `dltool.train.worker` child of the given rank: it works in its run's scratch folder,
    dltool-worker-RANK-*."""
    for pid in process_pids(b"dltool.train.worker", b"--serve"):
        try:
            if f"/dltool-worker-{rank}-" in os.readlink(f"/proc/{pid}/cwd"):
                return pid
        except OSError:  # ended meanwhile
            continue
    return None


def _kill_in_epoch_2(train: subprocess.Popen, run_dir: Path, victim) -> float:
    """SIGKILL victim(pid of the rank-1 TF worker) once epoch 1's checkpoint exists; returns the kill time."""
    first = run_dir / "checkpoints" / "epoch-001" / "checkpoint.json"
    tick = threading.Event()  # polls real state (a checkpoint file, a PID), never a guessed delay
    deadline = time.monotonic() + 300
    while not first.exists() and train.poll() is None and time.monotonic() < deadline:
        tick.wait(0.1)
    worker = _worker_pid(1)
    assert first.exists() and worker is not None, "training did not reach epoch 2"
    target = victim(worker)
    assert target is not None
    os.kill(target, signal.SIGKILL)
    return time.monotonic()


def _finished_after_retry(train: subprocess.Popen, run_dir: Path, killed_at: float) -> tuple[str, float]:
    """Wait for the run; check it retried once and finished 3 epochs; returns its stderr and the recovery time."""
    out, err = train.communicate(timeout=600)
    recovery = time.monotonic() - killed_at
    assert train.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["attempts"] == 2 and summary["epochs_done"] == 3
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    import keras

    assert keras.models.load_model(run_dir / "model" / "model.keras").output_shape == (None, 2)
    return err, recovery


def test_a_killed_training_worker_is_replaced_from_the_last_checkpoint(churn_on_cluster, cluster_env):
    write, folder = churn_on_cluster
    config = write("killed", epochs=3, steps_per_epoch=400, max_retries=2, timeout_s=30)
    train = start(cluster_env, "train", config, "--json")
    killed_at = _kill_in_epoch_2(train, folder / "killed", lambda worker: worker)  # the TF worker process itself
    err, recovery = _finished_after_retry(train, folder / "killed", killed_at)
    assert "dltool worker 1 was killed by SIGKILL" in err, err[-3000:]
    print(f"worker killed -> run finished in {recovery:.1f}s")


def test_spark_submit_runs_train_on_the_cluster(churn_on_cluster, standalone_cluster, cluster_env):
    write, _ = churn_on_cluster
    code, summary, err = spark_submit(standalone_cluster.url, cluster_env, "train", write("submitted", epochs=1))
    assert code == 0, err
    assert summary["status"] == "completed" and summary["workers"] == 2 and summary["epochs_done"] == 1


FACTORY = '''
import keras


@keras.saving.register_keras_serializable(package="churn_models")
class Scale(keras.layers.Layer):
    """A custom layer: loading a saved model needs this module, on every executor that scores it."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def build(input_shape, outputs, manifest, width=8):
    inputs = keras.Input(input_shape)
    x = keras.layers.Dense(width, activation="relu")(Scale(0.5)(inputs))
    return keras.Model(inputs, keras.layers.Dense(outputs, activation="softmax")(x))
'''


def test_a_model_factory_next_to_the_config_is_shipped_to_the_executors(
    churn_on_cluster, standalone_cluster, cluster_env
):
    """Executors have neither dltool nor churn_models.py: both arrive with the job (addPyFile).

    The config says local[2]; `--master` sends both commands to the cluster instead.
    """
    write, folder = churn_on_cluster
    (folder / "churn_models.py").write_text(FACTORY)
    config = write("factory", epochs=1, model={"factory": "churn_models:build", "args": {"width": 6}})
    data = yaml.safe_load(config.read_text())
    data["spark"] = {"master": "local[2]", "app_name": "factory-run", "conf": {"spark.executor.memory": "1g"}}
    config.write_text(yaml.safe_dump(data))
    code, summary, err = dltool(cluster_env, "train", config, "--master", standalone_cluster.url)
    assert code == 0, err
    assert summary["epochs_done"] == 1 and summary["replicas_in_sync"] == 2

    code, summary, err = dltool(cluster_env, "eval", config, "--master", standalone_cluster.url)
    assert code == 0, err
    ran = lambda: [app["name"] for app in standalone_cluster.state().get("completedapps", [])]
    tick, deadline = threading.Event(), time.monotonic() + 60  # the master marks an app done once its driver left
    while ran().count("factory-run") < 2 and time.monotonic() < deadline:
        tick.wait(0.25)
    assert ran().count("factory-run") == 2, ran()
    assert 0.0 <= summary["checkpoints"][0]["metrics"]["accuracy"] <= 1.0
    assert summary["checkpoints"][0]["metrics"]["examples"] > 0
