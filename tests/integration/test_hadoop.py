"""dltool on a real Hadoop cluster started on 127.0.0.1 by `.ci/hadoop` (HDFS: 1 NameNode, 2 DataNodes,
replication 2; YARN: 1 ResourceManager, 2 NodeManagers), Hadoop 3.5.0's own classes.

The chain runs as YARN applications with HDFS as the default filesystem; the executors get Python and
its libraries from a virtualenv packed with venv-pack and put on HDFS once (`spark.yarn.dist.archives`),
dltool itself from the zip the driver ships: nothing relies on the driver's virtualenv path on the nodes.
`dltool run` (ingest, train, eval and export in one application), predict, doctor and a tune whose study lives
on HDFS run as YARN applications. Faults: a container killed mid-training, the application killed with YARN's
own CLI mid-ingest, a DataNode stopped during an ingest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from dltool.cli import app
from dltool.storage.fs import open_location
from tests.cluster.cli import process_pids
from tests.conftest import ROOT, hadoop_launcher
from tests.integration.test_killed_ingest import _kill_tree, _wait_for

pytestmark = [pytest.mark.hadoop, pytest.mark.slow]

# At the peak: the packed virtualenv (2 GB) and Spark's jars (0.4 GB) twice in HDFS, unpacked once per
# NodeManager, plus the cache they are packed into. A NodeManager whose disk fills is marked unhealthy
# and YARN releases its containers ("Container released on a *lost* node"), so check before starting.
DISK_NEEDED = 14 * 2**30

class Hadoop:
    def __init__(self, launcher, folder: Path, info: dict):
        self.launcher, self.folder, self.info = launcher, folder, info
        self.default_fs = info["fs.defaultFS"]
        self.env = launcher.environment(folder)

    def uri(self, path: str) -> str:
        return self.default_fs + path

    def fs(self, *args: str) -> str:
        done = self.launcher.fs(self.folder, list(args), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def yarn(self, *args: str) -> str:
        done = self.launcher.yarn(self.folder, ["application", *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def names(self, path: str) -> list[str]:
        import pyarrow.fs as pafs

        folder = open_location(self.uri(path))
        return [info.base_name for info in folder.fs.get_file_info(pafs.FileSelector(folder.path, allow_not_found=True))]

    def exists(self, path: str) -> bool:
        """Through dltool's WebHDFS client: milliseconds, where FsShell starts a JVM (fast enough to poll)."""
        return open_location(self.uri(path)).exists()


@pytest.fixture(scope="module")
def hadoop(tmp_path_factory):
    """The cluster, started once (only this module uses it); HADOOP_CONF_DIR points at it while its tests run."""
    launcher = hadoop_launcher()
    folder = tmp_path_factory.mktemp("hadoop")
    free = shutil.disk_usage(folder).free
    if free < DISK_NEEDED:
        pytest.skip(f"the Hadoop tests need {DISK_NEEDED / 2**30:.0f} GB free under {folder.parent} (HDFS keeps two "
                    f"copies of the packed virtualenv and each NodeManager unpacks one); {free / 2**30:.1f} GB free")
    started = time.monotonic()
    info = launcher.start(folder)
    cluster = Hadoop(launcher, folder, info)
    cluster.start_s = time.monotonic() - started
    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)
    yield cluster
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    launcher.stop(folder, grace=5)  # its folder is thrown away: a short wait, then the kill
    shutil.rmtree(folder, ignore_errors=True)  # ~10 GB of blocks and NodeManager caches: not kept for the next run


@pytest.fixture(scope="module")
def yarn_conf(hadoop):
    """A config's `spark:` for YARN: Spark's jars and this virtualenv, packed, on HDFS (`.ci/hadoop yarn-setup`)."""
    started = time.monotonic()
    spark = hadoop.launcher.yarn_setup(hadoop.folder)
    hadoop.setup_s = time.monotonic() - started
    spark["conf"]["spark.yarn.maxAppAttempts"] = 1
    return spark


@pytest.fixture(scope="module")
def raw_images(hadoop, tmp_path_factory):
    """A tenth of the sample images (3 classes), put on HDFS with Hadoop's own FsShell."""
    local = tmp_path_factory.mktemp("images")
    for label in ("0", "1", "2"):
        (local / label).mkdir()
        for path in sorted((ROOT / "sample_data" / "images" / label).iterdir())[:20]:
            (local / label / path.name).write_bytes(path.read_bytes())
    hadoop.fs("-mkdir", "-p", "/data")
    hadoop.fs("-put", str(local), "/data/images")
    return "hdfs:///data/images"


def _config(tmp_path: Path, spark: dict, name: str, **train) -> Path:
    data = yaml.safe_load((ROOT / "configs" / "images.yaml").read_text())
    data["spark"] = spark
    data["dataset"]["path"] = f"hdfs:///datasets/{name}"
    data["ingest"]["input"] = "hdfs:///data/images"
    data["ingest"].pop("augment", None)
    data["train"].update({"run_dir": f"hdfs:///runs/{name}", "epochs": 3, "workers": 2, **train})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def dltool(*args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, dict | None, float]:
    """The dltool CLI in its own process (a YARN driver; the test session's local Spark stays apart)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "dltool", *args, "--json"], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))  # fmt: skip
    summary = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else None
    return done, summary, time.monotonic() - started


TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def yarn_chain(hadoop, yarn_conf, raw_images, tmp_path_factory):
    """`dltool run` on YARN, once: ingest from hdfs://, train 2 workers, eval and export, one YARN application."""
    config = _config(tmp_path_factory.mktemp("chain"), yarn_conf, "yarn_digits")
    done, summary, TIMINGS["run"] = dltool("run", str(config), "--until", "export", "-f", "savedmodel")
    assert done.returncode == 0, done.stderr[-3000:]
    return config, summary


def test_chain_on_yarn_reads_and_writes_hdfs(hadoop, yarn_chain):
    config, summary = yarn_chain
    steps = summary["steps"]
    assert steps["ingest"]["counts"]["rows"] == 60 and steps["ingest"]["counts"]["quarantined"] == 0
    assert re.search(r"application_\d+_\d+", hadoop.yarn("-list", "-appStates", "FINISHED"))  # it ran on YARN
    manifest = json.loads(hadoop.fs("-cat", "/datasets/yarn_digits/_manifest.json"))
    assert sum(split["rows"] for split in manifest["splits"].values()) == 60
    assert steps["train"]["status"] == "completed" and steps["train"]["workers"] == 2
    logs = hadoop.fs("-ls", "/runs/yarn_digits/logs/attempt-1")
    assert "worker-0.log" in logs and "worker-1.log" in logs  # two TensorFlow workers, in YARN containers
    assert steps["eval"]["checkpoints"][0]["metrics"]["examples"] == manifest["splits"]["test"]["rows"]
    assert hadoop.exists("/runs/yarn_digits/export/saved_model/saved_model.pb")

    done, predicted, TIMINGS["predict"] = dltool("predict", str(config), "--input", "hdfs:///data/images/1",
                                                 "--output", "hdfs:///predictions/yarn_digits")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert predicted["rows"] == 20 and hadoop.exists("/predictions/yarn_digits/_DLTOOL")
    done, doctor, _ = dltool("doctor", str(config))
    checks = {check["name"]: check for check in doctor["checks"]}
    assert done.returncode == 0 and doctor["status"] == "ok", doctor
    assert {"yarn queue", "yarn containers", "yarn python", "yarn spark jars", "executor tensorflow"} <= set(checks)
    assert "3072 MB" in checks["yarn containers"]["found"]  # 1g + the 2g overhead, against the scheduler's largest
    print(f"\nHadoop start {hadoop.start_s:.0f} s, env + jars to HDFS {hadoop.setup_s:.0f} s; on YARN: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in TIMINGS.items()))


def test_tune_on_yarn_keeps_its_study_on_hdfs(hadoop, yarn_chain, tmp_path):
    """Two trials at once, one TensorFlow worker each, in YARN containers; the study (Optuna's journal, tune.json,
    best.yaml, the plots) and the trials' run dirs on HDFS; a rerun finds the study done."""
    config, _ = yarn_chain
    data = yaml.safe_load(config.read_text())
    data["train"].update(run_dir="hdfs:///runs/yarn_tune", epochs=2, workers=1)
    data["tune"] = {"trials": 2, "parallel": 2, "space": {"train.optimizer.learning_rate": {"choice": [0.003, 0.001]}}}
    tuned = tmp_path / "tune.yaml"
    tuned.write_text(yaml.safe_dump(data, sort_keys=False))
    done, summary, TIMINGS["tune"] = dltool("tune", str(tuned))
    assert done.returncode == 0, done.stderr[-3000:]
    assert summary["counts"]["complete"] == 2 and summary["journal"] == "hdfs:///runs/yarn_tune/tune/study.journal"
    names = hadoop.names("/runs/yarn_tune/tune")
    assert {"study.journal", "tune.json", "best.yaml", "optimization_history.png", "trial-000", "trial-001"} <= set(names)
    again, rerun, _ = dltool("tune", str(tuned))
    assert again.returncode == 0 and rerun["status"] == "up_to_date"


def test_container_killed_mid_training_resumes_from_checkpoint(hadoop, yarn_conf, yarn_chain, tmp_path):
    config = _config(tmp_path, yarn_conf, "yarn_killed", epochs=12)
    data = yaml.safe_load(config.read_text())
    data["dataset"]["path"] = "hdfs:///datasets/yarn_digits"  # the chain's dataset: no ingest of its own
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    process = subprocess.Popen([sys.executable, "-m", "dltool", "train", str(config), "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ))  # fmt: skip
    try:
        if not _wait_for(lambda: hadoop.exists("/runs/yarn_killed/checkpoints/epoch-003"), 300, process):
            ended = process.poll() is not None
            pytest.fail(f"no checkpoint appeared; the training {'exited ' + str(process.returncode) if ended else 'ran on'}"
                        + (": " + process.communicate()[1][-3000:] if ended else ""))
        executors = process_pids(b"CoarseGrainedExecutorBackend")
        assert executors, "no executor container found"
        os.kill(executors[0], signal.SIGKILL)  # one NodeManager's container, running a TensorFlow worker
        out, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            _kill_tree(process)
    assert process.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["epochs_done"] == 12
    assert summary["attempts"] >= 2  # the barrier stage failed with the container and was retried
    assert "resum" in err.lower()  # from its newest checkpoint, not from epoch 1


def test_yarn_kill_mid_ingest_leaves_no_dataset_and_rerun_completes(hadoop, yarn_conf, raw_images, tmp_path):
    config = _config(tmp_path, yarn_conf, "yarn_app_killed")
    process = subprocess.Popen([sys.executable, "-m", "dltool", "ingest", str(config), "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ))  # fmt: skip
    try:
        def running_app() -> str | None:
            listed = hadoop.yarn("-list", "-appStates", "RUNNING")
            found = re.findall(r"(application_\d+_\d+)\s+dltool", listed)
            return found[0] if found else None

        if not _wait_for(running_app, 300, process):
            ended = process.poll() is not None
            err = process.communicate()[1] if ended else ""
            causes = [line for line in err.splitlines() if re.search(r"(Exception|Error)\b", line) and "\tat " not in line]
            pytest.fail(f"the ingest never ran on YARN; it {'exited ' + str(process.returncode) if ended else 'ran on'}"
                        + (": " + "\n".join(causes[:8]) + "\n...\n" + err[-1500:] if ended else ""))
        hadoop.yarn("-kill", running_app())
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            _kill_tree(process)
    assert process.returncode != 0
    # one line from dltool (Spark's JVM may add its own log lines around it), no Python traceback
    assert "Traceback (most recent call last)" not in err, err[-3000:]
    assert [line for line in err.splitlines() if line.startswith("dltool: error:")], err[-3000:]
    assert not hadoop.exists("/datasets/yarn_app_killed/_manifest.json")  # no half dataset
    done, ingested, _ = dltool("ingest", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    assert ingested["counts"]["rows"] == 60


def cli(*args: str):
    result = CliRunner().invoke(app, [*map(str, args), "--json"])
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def test_csv_and_text_datasets_on_hdfs(spark, hadoop, tmp_path):
    """The csv and text readers from hdfs:// into hdfs:// (local Spark, HDFS only)."""
    hadoop.fs("-mkdir", "-p", "/data/tabular")
    hadoop.fs("-put", "-f", str(ROOT / "sample_data" / "tabular" / "customers.csv"), "/data/tabular/")
    reviews = tmp_path / "reviews"  # 40 reviews a class: FsShell puts about 5 small files a second here
    for label in ("negative", "positive"):
        (reviews / label).mkdir(parents=True)
        for review in sorted((ROOT / "sample_data" / "text" / label).iterdir())[:40]:
            (reviews / label / review.name).write_bytes(review.read_bytes())
    hadoop.fs("-put", str(reviews), "/data/reviews")
    for shipped, source in (("csv", "/data/tabular/customers.csv"), ("text", "/data/reviews")):
        data = yaml.safe_load((ROOT / "configs" / f"{shipped}.yaml").read_text())
        data["spark"] = {"master": "local[2]"}
        data["ingest"]["input"] = hadoop.uri(source)
        data["dataset"]["path"] = hadoop.uri(f"/datasets/{shipped}")
        path = tmp_path / f"{shipped}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        result, summary = cli("ingest", path)
        assert result.exit_code == 0, result.output
        assert summary["counts"]["rows"] > 0 and summary["counts"]["quarantined"] == 0
        manifest = json.loads(hadoop.fs("-cat", f"/datasets/{shipped}/_manifest.json"))
        assert sum(s["rows"] for s in manifest["splits"].values()) == summary["counts"]["rows"]
        result, again = cli("ingest", path)  # a rerun on HDFS is up to date
        assert result.exit_code == 0 and again["status"] == "up_to_date"


def test_datanode_stopped_during_ingest_loses_nothing(spark, hadoop, raw_images, tmp_path):
    """Replication 2: with one DataNode gone mid-ingest, every row is still written once (runs last: the
    cluster keeps one DataNode after it)."""
    data = yaml.safe_load(_config(tmp_path, {"master": "local[2]"}, "dn_killed").read_text())
    data["ingest"]["augment"] = {"copies": 3, "rotate": 10}  # more shards to write while the DataNode stops
    path = tmp_path / "dn.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    process = subprocess.Popen([sys.executable, "-m", "dltool", "ingest", str(path), "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ))  # fmt: skip
    try:
        assert _wait_for(lambda: any(".staging-" in name for name in hadoop.names("/datasets")), 120, process), \
            "the ingest never started writing"
        hadoop.launcher.stop_datanode(hadoop.folder, 1)
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            _kill_tree(process)
    if process.returncode != 0:  # a clean failure is allowed; the rerun must then complete
        assert "Traceback (most recent call last)" not in err, err[-3000:]
        out = subprocess.run([sys.executable, "-m", "dltool", "ingest", str(path), "--json"], capture_output=True,
                             text=True, timeout=300, env=dict(os.environ)).stdout  # fmt: skip
    counts = json.loads(out.strip().splitlines()[-1])["counts"]
    assert counts["ok"] == 60 and counts["rows"] == 60 + counts["augmented"] > 60  # none lost
    manifest = json.loads(hadoop.fs("-cat", "/datasets/dn_killed/_manifest.json"))
    assert sum(s["rows"] for s in manifest["splits"].values()) == counts["rows"]
    shards = [open_location(hadoop.uri(f"/datasets/dn_killed/{f}")) for s in manifest["splits"].values() for f in s["files"]]
    assert sum(pq.read_metadata(loc.fs.open_input_file(loc.path)).num_rows for loc in shards) == counts["rows"]  # none twice
