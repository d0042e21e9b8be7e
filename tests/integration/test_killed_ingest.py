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
from dltool.storage import Manifest, open_location
from tests.conftest import ROOT


def _wait_for(condition, timeout: float, process) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return True
        time.sleep(0.05)  # polling the filesystem for the moment to strike, not synchronising work
    return False


def _descendants(pid: int) -> set[int]:
    """Every live process below pid, found by walking /proc's parent links."""
    from pathlib import Path

    parents = {}
    for proc in Path("/proc").iterdir():
        try:
            status = (proc / "status").read_text()
        except OSError:
            continue
        if proc.name.isdigit():
            parents[int(proc.name)] = int(status.split("\nPPid:\t", 1)[1].split("\n", 1)[0])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _kill_tree(process, timeout: float = 30) -> None:
    """SIGKILL the ingest and everything it started, and wait until all of it is gone.

    Killing the process group is not enough: pyspark.daemon moves into a group of its own,
    so it and its forked workers would run their last task (writing a shard into the dead
    run's staging folder) for a moment after the kill, racing the rerun's clean-up.
    """
    tree = _descendants(process.pid)
    os.killpg(process.pid, signal.SIGKILL)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(map(_running, tree)):
        time.sleep(0.05)  # waiting for the kernel to take them down, not synchronising work


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return bool(f.read())  # a zombie (dead, not yet reaped) has an empty command line
    except OSError:
        return False


def test_killed_ingest_then_rerun(spark, tmp_path):
    out = tmp_path / "digits"
    command = [sys.executable, "-m", "dltool.cli", "ingest", str(ROOT / "configs" / "images.yaml"),
               "--output", str(out), "--conf", "spark.ui.enabled=false"]  # fmt: skip
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        struck = _wait_for(lambda: any(tmp_path.glob("digits.staging-*/*/part-*.parquet")), 120, process)
    finally:
        _kill_tree(process)
    if not struck:
        pytest.fail("the ingest finished or failed before any shard was staged; nothing was killed midway")
    assert not (out / "_SUCCESS").exists()
    with pytest.raises(InputNotFoundError):
        Manifest.read(open_location(str(out)))
    # The rerun cleans the dead run's staging area and writes the full dataset.
    result = CliRunner().invoke(app, ["ingest", str(ROOT / "configs" / "images.yaml"), "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["counts"]["rows"] == 600 + summary["counts"]["augmented"] and summary["counts"]["ok"] == 600
    assert not list(tmp_path.glob("digits.staging-*"))
    assert not (tmp_path / "digits.dltool-lock").exists()  # the dead run's lock was taken over, then released
    assert Manifest.read(open_location(str(out))).counts.inputs == 600


def test_unreachable_storage_is_one_line(tmp_path):
    result = CliRunner().invoke(
        app, ["ingest", str(ROOT / "configs" / "images.yaml"), "--output", "hdfs://127.0.0.1:9/data/digits"]
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dltool: error: hdfs://127.0.0.1:9/data/digits: cannot reach storage")
    assert "WebHDFS at http://127.0.0.1:9870" in lines[0]


def test_killed_incremental_ingest_keeps_the_last_version_and_the_rerun_adds_the_next(spark, tmp_path):
    import shutil

    images = tmp_path / "images"
    shutil.copytree(ROOT / "sample_data" / "images", images)
    out = tmp_path / "digits"
    args = ["ingest", str(ROOT / "configs" / "images.yaml"), "--input", str(images), "--output", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    rows = Manifest.read(open_location(str(out))).counts.rows
    for copy in range(3):  # 1,800 new files: version 2 is being written when it is killed
        for source in sorted((ROOT / "sample_data" / "images").rglob("*.*")):
            shutil.copy(source, images / source.parent.name / f"copy{copy}-{source.name}")
    process = subprocess.Popen([sys.executable, "-m", "dltool.cli", *args, "--conf", "spark.ui.enabled=false"],
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        struck = _wait_for(lambda: any(out.glob("*/part-v00002-*.parquet")), 120, process)
    finally:
        _kill_tree(process)
    if not struck:
        pytest.fail("the ingest finished or failed before any shard of version 2 was written; nothing was killed midway")
    manifest = Manifest.read(open_location(str(out)))  # the last version, whole
    assert manifest.version == 1 and manifest.counts.rows == rows
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["version"] == 2 and sum(summary["changes"]["added"].values()) == 1800
    assert Manifest.read(open_location(str(out))).counts.inputs == 2400
