"""MLflow tracking against a real MLflow server on 127.0.0.1 (SQLite backend, local artifact store):
train logs config, epochs, files and the registered model; eval and export log into the same run;
predict loads the registered model by alias."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pyarrow.dataset as pads
import pytest
import yaml
from typer.testing import CliRunner

from dltool.cli import app
from tests.conftest import ROOT


def cli(*args):
    result = CliRunner().invoke(app, [*map(str, args), "--json"])
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(root / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)  # waiting for the server to listen
    else:
        server.kill()
        pytest.fail(f"the MLflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
    yield uri
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


def test_a_tracked_run_eval_export_and_the_registered_model(spark, churn_dataset, mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    data = yaml.safe_load((ROOT / "configs" / "csv.yaml").read_text())
    data["dataset"]["path"] = str(churn_dataset)
    data["spark"] = {"master": "local[2]"}
    data["train"].update(run_dir=str(tmp_path / "run"), epochs=2, workers=1)
    data["tracking"] = {"mlflow": {"tracking_uri": mlflow_server, "experiment": "dltool-test", "register_as": "churn"}}
    config = tmp_path / "csv.yaml"
    config.write_text(yaml.safe_dump(data))

    result, trained = cli("train", config)
    assert result.exit_code == 0, result.output
    tracked = trained["mlflow"]
    assert tracked["tracking_uri"] == mlflow_server and tracked["version"] == "1"
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(tracked["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["train.epochs"] == "2"
    assert run.data.params["dataset.manifest_hash"] == trained["dataset_hash"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")}
    assert logged == {h["epoch"]: pytest.approx(h["val_accuracy"]) for h in history}
    waits = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "input_wait")}
    assert waits == {h["epoch"]: pytest.approx(h["input_wait"]) for h in history}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"history.jsonl", "tensorboard"} <= artifacts
    assert client.get_model_version("churn", "1").run_id == run.info.run_id

    result, scored = cli("eval", config)
    assert result.exit_code == 0, result.output
    run = client.get_run(tracked["run_id"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(scored["checkpoints"][0]["metrics"]["accuracy"])
    assert "eval/test/eval.json" in {a.path for a in client.list_artifacts(run.info.run_id, "eval/test")}

    result, exported = cli("export", config, "--format", "tflite")
    assert result.exit_code == 0, result.output
    run = client.get_run(tracked["run_id"])
    assert run.data.metrics["export_tflite_accuracy"] == pytest.approx(exported["formats"][1]["accuracy"])
    assert "export/model.tflite" in {a.path for a in client.list_artifacts(run.info.run_id, "export")}

    # The registered model, by alias, predicts what the run's own model predicts.
    client.set_registered_model_alias("churn", "champion", "1")
    own, registered = tmp_path / "own", tmp_path / "registered"
    result, _ = cli("predict", config, "--input", churn_dataset, "--output", own)
    assert result.exit_code == 0, result.output
    result, summary = cli("predict", config, "--input", churn_dataset, "--output", registered, "--model", "models:/churn@champion")
    assert result.exit_code == 0, result.output
    a = pads.dataset(str(own), format="parquet").to_table().sort_by("key")
    b = pads.dataset(str(registered), format="parquet").to_table().sort_by("key")
    assert a.num_rows == b.num_rows == summary["rows"] > 0
    assert a.column("predicted").to_pylist() == b.column("predicted").to_pylist()


def test_an_unreachable_tracking_server_stops_training_with_one_line(spark, churn_dataset, tmp_path):
    data = yaml.safe_load((ROOT / "configs" / "csv.yaml").read_text())
    data["dataset"]["path"] = str(churn_dataset)
    data["spark"] = {"master": "local[2]"}
    data["train"].update(run_dir=str(tmp_path / "run"), epochs=1, workers=1)
    config = tmp_path / "csv.yaml"
    config.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["train", str(config), "--mlflow", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()  # before any work: no progress line, no Spark
    assert len(lines) == 1 and lines[0].startswith("dltool: error: tracking.mlflow: cannot reach http://127.0.0.1:9")
    assert not (tmp_path / "run").exists()
