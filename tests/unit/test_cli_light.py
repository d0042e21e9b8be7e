"""CLI behaviour that needs no Spark: fast --help, validate exit codes, schema."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

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
