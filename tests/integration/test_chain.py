"""dltool run: the whole chain in one command and one Spark application; a rerun is a no-op; gates still apply."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from dltool.cli import app
from tests.conftest import ROOT


def run(*args: str):
    result = CliRunner().invoke(app, ["run", *map(str, args), "--json"])
    lines = result.stdout.strip().splitlines()
    return result, (json.loads(lines[-1]) if lines else None)  # the last line is the whole result


PLANTED = {"conf": "planted-conf-secret-7f3a91", "flag": "planted-flag-password-2c8e", "env": "planted-env-token-b41d07"}


def test_run_chains_every_step_and_a_rerun_changes_nothing(spark, tmp_path, monkeypatch):
    monkeypatch.setenv("DLTOOL_TEST_API_TOKEN", PLANTED["env"])
    data = yaml.safe_load((ROOT / "configs" / "csv.yaml").read_text())
    data["ingest"]["input"] = str(ROOT / "sample_data" / "tabular" / "customers.csv")
    data["spark"] = {"master": "local[2]", "conf": {"spark.hadoop.fs.s3a.secret.key": PLANTED["conf"]}}
    data["dataset"]["path"] = str(tmp_path / "churn")
    data["train"].update(run_dir=str(tmp_path / "run"), epochs=2, workers=1)
    config = tmp_path / "csv.yaml"
    config.write_text(yaml.safe_dump(data))

    result, first = run(config, "--until", "export", "--format", "tflite",
                        "--conf", f"spark.dltool.test.password={PLANTED['flag']}")  # fmt: skip
    assert result.exit_code == 0, result.output
    # Secrets planted in spark.conf, --conf and the environment reach no file dltool wrote, nor its output.
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != config]
    assert len(written) > 20
    for secret in PLANTED.values():
        assert secret not in result.output
        assert not [p for p in written if secret.encode() in p.read_bytes()], secret
    assert "*********(redacted)" in (tmp_path / "run" / "config.json").read_text()
    assert list(first["steps"]) == ["ingest", "train", "eval", "export"] and first["status"] == "ok"
    assert [first["steps"][s]["status"] for s in ("ingest", "train")] == ["written", "completed"]
    accuracy = first["steps"]["eval"]["checkpoints"][0]["metrics"]["accuracy"]
    assert first["steps"]["export"]["formats"][1]["format"] == "tflite"
    outputs = [tmp_path / "run" / "run.json", tmp_path / "run" / "eval" / "test" / "eval.json",
               tmp_path / "run" / "export" / "export.json", tmp_path / "churn" / "_manifest.json"]  # fmt: skip
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in outputs}

    result, again = run(config, "--until", "export", "--format", "tflite")
    assert result.exit_code == 0, result.output
    assert {s: r["status"] for s, r in again["steps"].items()} == dict.fromkeys(first["steps"], "up_to_date")
    assert again["steps"]["eval"]["checkpoints"][0]["metrics"]["accuracy"] == accuracy
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in outputs} == before  # nothing rewritten

    # A gate is checked against the stored figures: the rerun fails at eval and never exports.
    result, failed = run(config, "--until", "export", "--format", "tflite", "--fail-under", "accuracy=1.5")
    assert result.exit_code == 3, result.output
    assert failed["failed_step"] == "eval" and failed["status"] == "failed_gate" and "export" not in failed["steps"]
    assert "accuracy" in failed["steps"]["eval"]["message"]


def test_run_refuses_export_without_a_format(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"name": "x", "dataset": {"path": str(tmp_path / "d")},
                                      "train": {"run_dir": str(tmp_path / "r")}}))  # fmt: skip
    result, summary = run(config, "--until", "export")
    assert result.exit_code == 2 and "needs at least one --format" in summary["message"]
