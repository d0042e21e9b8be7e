"""ingest -> train (2 barrier workers = 2 executors) -> eval against a real standalone cluster."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.conftest import ROOT


def dltool(*args) -> tuple[int, dict | None, str]:
    """The real CLI in its own process (its own Spark application on the cluster)."""
    result = subprocess.run([sys.executable, "-m", "dltool.cli", *map(str, args), "--json"],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    summary = json.loads(result.stdout) if result.stdout.strip() else None
    return result.returncode, summary, result.stderr[-3000:]


def test_csv_experiment_runs_end_to_end_on_the_cluster(standalone_cluster, tmp_path):
    data = yaml.safe_load((ROOT / "configs" / "csv.yaml").read_text())
    data["ingest"]["input"] = str(ROOT / "sample_data" / "tabular" / "customers.csv")
    data["dataset"]["path"] = str(tmp_path / "churn")
    data["spark"] = {"master": standalone_cluster, "conf": {"spark.executor.memory": "1g"}}
    data["train"].update(run_dir=str(tmp_path / "run"), epochs=2, workers=2)
    config = tmp_path / "churn.yaml"
    config.write_text(yaml.safe_dump(data))

    code, summary, err = dltool("ingest", config)
    assert code == 0, err
    assert summary["counts"]["ok"] == summary["counts"]["inputs"] == 400

    code, summary, err = dltool("train", config)
    assert code == 0, err
    assert summary["workers"] == 2 and summary["epochs_done"] == 2 and summary["replicas_in_sync"] == 2

    code, summary, err = dltool("eval", config, "--checkpoint", "all")
    assert code == 0, err
    assert [c["epoch"] for c in summary["checkpoints"]] == [1, 2]
    assert summary["checkpoints"][0]["metrics"]["examples"] == json.loads(
        (tmp_path / "churn" / "_manifest.json").read_text()
    )["splits"]["test"]["rows"]
