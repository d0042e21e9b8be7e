"""dltool doctor on a real local[2] Spark: a healthy setup passes; too many workers and a missing input fail, saying why."""

from __future__ import annotations

import json

from tests.conftest import ROOT


def doctor(*args):
    from typer.testing import CliRunner

    from dltool.cli import app

    result = CliRunner().invoke(app, ["doctor", *map(str, args), "--json"])
    return result, json.loads(result.stdout)


def test_a_healthy_local_setup_passes_every_check(spark, tmp_path, write_config):
    config = {"name": "ok", "dataset": {"path": str(tmp_path / "data" / "churn")},
              "ingest": {"reader": "csv", "input": str(ROOT / "sample_data" / "tabular" / "customers.csv"),
                         "numeric": ["age"], "label": "churn"},
              "train": {"run_dir": str(tmp_path / "runs" / "churn"), "workers": 2}}  # fmt: skip
    result, summary = doctor(write_config(config))
    assert result.exit_code == 0, result.output
    assert [c["name"] for c in summary["checks"]] == ["java", "spark", "task slots", "dynamic allocation", "gpus",
                                                       "executors", "input", "dataset", "run dir"]  # fmt: skip
    assert all(c["ok"] for c in summary["checks"]) and summary["failed"] == []
    assert not any(p.name.startswith(".dltool-doctor") for p in (tmp_path / "data").iterdir())  # the probe is gone


def test_too_many_workers_and_a_missing_input_fail_with_the_fix(spark, tmp_path, write_config):
    config = {"name": "bad", "dataset": {"path": str(tmp_path / "churn")},
              "ingest": {"reader": "csv", "input": str(tmp_path / "nowhere.csv"), "numeric": ["age"], "label": "churn"},
              "train": {"run_dir": str(tmp_path / "run"), "workers": 8}}  # fmt: skip
    result, summary = doctor(write_config(config))
    assert result.exit_code == 2 and summary["failed"] == ["task slots", "input"]
    slots = next(c for c in summary["checks"] if c["name"] == "task slots")
    assert slots["found"] == "2 free task slot(s) for train.workers 8" and "lower train.workers" in slots["fix"]
    assert "does not exist" in next(c for c in summary["checks"] if c["name"] == "input")["found"]
