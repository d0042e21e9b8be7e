"""An ingest killed midway (SIGKILL of the driver's process group) leaves nothing that looks complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from dltool.cli import app
from dltool.errors import InputNotFoundError
from dltool.storage import open_location, read_manifest
from tests.conftest import ROOT


def _wait_for(condition, timeout: float, process) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return True
        time.sleep(0.05)  # polling the filesystem for the moment to strike, not synchronising work
    return False


def test_killed_ingest_then_rerun(spark, tmp_path):
    out = tmp_path / "digits"
    command = [sys.executable, "-m", "dltool.cli", "ingest", str(ROOT / "configs" / "images.yaml"),
               "--output", str(out), "--conf", "spark.ui.enabled=false"]  # fmt: skip
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        struck = _wait_for(lambda: any(tmp_path.glob("digits.staging-*/*/part-*.parquet")), 120, process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    if not struck:
        pytest.fail("the ingest finished or failed before any shard was staged; nothing was killed midway")
    assert not (out / "_SUCCESS").exists()
    with pytest.raises(InputNotFoundError):
        read_manifest(open_location(str(out)))
    # The rerun cleans the dead run's staging area and writes the full dataset.
    result = CliRunner().invoke(app, ["ingest", str(ROOT / "configs" / "images.yaml"), "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["counts"]["rows"] == 600 + summary["counts"]["augmented"] and summary["counts"]["ok"] == 600
    assert not list(tmp_path.glob("digits.staging-*"))
    assert read_manifest(open_location(str(out)))["counts"]["inputs"] == 600


def test_unreachable_storage_is_one_line(tmp_path):
    result = CliRunner().invoke(
        app, ["ingest", str(ROOT / "configs" / "images.yaml"), "--output", "hdfs://127.0.0.1:9/data/digits"]
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dltool: error: hdfs://127.0.0.1:9/data/digits: cannot open HDFS")
