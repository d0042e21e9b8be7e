"""CLI behaviour that needs no Spark: fast --help, validate exit codes, schema."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import dltool

from dltool.cli import app
from tests.conftest import ROOT


def test_help_imports_no_heavy_library():
    code = (
        "import sys; from dltool.cli import app; from typer.testing import CliRunner;"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output;"
        "heavy = [m for m in ('tensorflow', 'pyspark', 'cv2', 'pyarrow', 'soundfile', 'keras') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == ""


def test_validate_ok_and_invalid(write_config):
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(ROOT / "configs" / "images.yaml"), "--json"])
    assert ok.exit_code == 0
    assert json.loads(ok.stdout)["status"] == "ok"
    bad = write_config({"name": "x", "dataset": {"path": "d"}, "ingest": {"reader": "image", "input": "i", "size": [0, 4]}})
    result = runner.invoke(app, ["validate", str(bad), "--json"])
    assert result.exit_code == 2
    summary = json.loads(result.stdout)
    assert summary["status"] == "error" and summary["exit_code"] == 2
    assert f"{bad}:7: ingest.size:" in summary["message"]
    assert "Traceback" not in result.output


def test_missing_config_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "config file not found" in result.stderr


def test_bad_conf_option_exit_2():
    result = CliRunner().invoke(app, ["ingest", str(ROOT / "configs" / "csv.yaml"), "--conf", "nonsense", "--dry-run"])
    assert result.exit_code == 2
    assert "expected KEY=VALUE" in result.stderr


def test_dry_run_lists_inputs_without_spark(tmp_path):
    result = CliRunner().invoke(
        app, ["ingest", str(ROOT / "configs" / "images.yaml"), "--output", str(tmp_path / "d"), "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["status"] == "dry_run" and plan["inputs"] == 600
    assert sum(plan["splits"].values()) == 600
    assert plan["labels"] == [str(d) for d in range(10)]
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("command", ["ingest", "train", "eval", "export", "run", "tune", "predict", "validate",
                                     "doctor", "inspect", "schema", "init"])
def test_help_names_things_and_shows_an_example(command):
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "<str>" not in result.output and "list[str]" not in result.output
    assert "{config}" not in result.output.lower()
    assert f"dltool {command}" in result.output.split("Examples:")[1]


def test_one_name_per_concept_old_names_hidden():
    runner = CliRunner()
    for command in ("ingest", "train", "eval", "export", "tune", "run"):
        assert "--data" in runner.invoke(app, [command, "--help"], terminal_width=200).output, command
    assert "--output" not in runner.invoke(app, ["ingest", "--help"], terminal_width=200).output
    bad = runner.invoke(app, ["run", str(ROOT / "configs" / "csv.yaml"), "--until", "evaluate"])
    assert bad.exit_code == 2 and "'evaluate' is not one of" in bad.output


def test_the_old_ingest_output_option_still_names_the_dataset(tmp_path):
    result = CliRunner().invoke(app, ["ingest", str(ROOT / "configs" / "csv.yaml"), "--output", str(tmp_path / "d"),
                                      "--dry-run", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "d") in " ".join(json.loads(result.stdout)["writes"])


def test_version_names_what_dltool_runs_on():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    names = [line.split(" ", 1)[0] for line in result.stdout.splitlines()]
    assert names == ["dltool", "python", "spark", "tensorflow", "keras", "java"]
    assert result.stdout.startswith(f"dltool {dltool.__version__}\n")


def test_validate_says_a_missing_input_and_warns_of_an_unchecked_store(write_config, tmp_path):
    runner = CliRunner()
    missing = write_config({"name": "x", "dataset": {"path": "d"}, "ingest": {"reader": "csv", "input": "nope.csv", "numeric": "auto"}})
    result = runner.invoke(app, ["validate", str(missing)])
    assert result.exit_code == 2
    assert f"ingest.input: {tmp_path / 'nope.csv'} does not exist" in result.stderr
    remote = write_config({"name": "x", "dataset": {"path": "d"}, "ingest": {"reader": "csv", "input": "s3://b/x.csv", "numeric": "auto"}},
                          name="remote.yaml")  # fmt: skip
    result = runner.invoke(app, ["validate", str(remote), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["warnings"] == ["ingest.input s3://b/x.csv is on a store: not checked here "
                                                     "(dltool doctor CONFIG reaches it)"]  # fmt: skip
