"""An image ingest on the cluster killed midway: train refuses the remains; the rerun equals an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pyarrow.dataset as pads
import pytest
import yaml

from tests.cluster.cli import dltool
from tests.conftest import ROOT


def _split_keys(dataset) -> dict[str, list[str]]:
    return {split: sorted(pads.dataset(str(dataset / split), format="parquet").to_table().column("key").to_pylist())
            for split in ("train", "val", "test")}  # fmt: skip


def test_killed_ingest_leaves_nothing_trainable_and_the_rerun_matches(standalone_cluster, cluster_env, tmp_path):
    data = yaml.safe_load((ROOT / "configs" / "images.yaml").read_text())
    data["ingest"]["input"] = str(ROOT / "sample_data" / "images")
    data["spark"] = {"master": standalone_cluster.url, "conf": {"spark.executor.memory": "1g"}}
    data["train"]["run_dir"] = str(tmp_path / "run")
    config = tmp_path / "digits.yaml"
    config.write_text(yaml.safe_dump(data))

    code, reference, err = dltool(cluster_env, "ingest", config, "--output", tmp_path / "reference")
    assert code == 0, err

    out = tmp_path / "digits"
    process = subprocess.Popen([sys.executable, "-m", "dltool.cli", "ingest", str(config), "--output", str(out)],
                               env=cluster_env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    tick = threading.Event()  # polls for the moment to strike (a staged shard), never a guessed delay
    deadline = time.monotonic() + 180
    struck = False
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if any(tmp_path.glob("digits.staging-*/*/part-*.parquet")):
                struck = True
                break
            tick.wait(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the driver and its JVM
        process.wait()
    if not struck:
        pytest.fail("the ingest ended before any shard was staged; nothing was killed midway")

    code, summary, _ = dltool(cluster_env, "train", config, "--data", out)
    assert code == 2 and ("not found" in summary["message"] or "incomplete" in summary["message"])

    code, rerun, err = dltool(cluster_env, "ingest", config, "--output", out)
    assert code == 0, err
    assert rerun["counts"] == reference["counts"] and rerun["splits"] == reference["splits"]
    assert _split_keys(out) == _split_keys(tmp_path / "reference")
    assert not list(tmp_path.glob("digits.staging-*"))
