"""`dltool doctor`: a preflight of the machine and the cluster a config will run on, one line per check.

Each check says what it found and, when it fails, what to do. Nothing is written except a probe
file in each output location, removed at once.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from dataclasses import asdict, dataclass

from dltool.config.models import ExperimentConfig, SparkSettings
from dltool.errors import DltoolError
from dltool.storage.stores import with_storage


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str
    fix: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@with_storage
def run_doctor(config: ExperimentConfig | None = None, spark: SparkSettings | None = None) -> list[Check]:
    """The checks for `config` (without one: Java and Spark per `spark`, default local); stops early when
    Java or Spark is missing."""
    checks = [_java()]
    if not checks[0].ok:
        return checks
    spark_settings = config.spark if config is not None else spark or SparkSettings()
    spark, started = _spark(spark_settings)
    checks.append(started)
    if spark is None:
        return checks
    checks += [_slots(spark, config), _dynamic_allocation(spark), _gpus(spark, spark_settings), _executors(spark)]
    if config is not None:
        checks += _locations(config)
    return checks


def _java() -> Check:
    from dltool.spark.session import java_available, java_command

    if not java_available():
        return Check("java", False, "not found", "install Java 17+ (apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
    try:
        done = subprocess.run([java_command(), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check("java", False, f"cannot run: {e}", "check JAVA_HOME points at a working JDK 17+")
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr)
    major = int(found.group(1)) if found else 0
    major = int(found.group(2) or 0) if major == 1 else major  # "1.8" is Java 8
    line = (done.stderr.strip().splitlines() or ["?"])[0]
    if major < 17:
        return Check("java", False, line, "Spark 4 needs Java 17 or newer: install it and set JAVA_HOME")
    return Check("java", True, line)


def _spark(settings: SparkSettings):
    from dltool.spark.session import spark_session

    try:
        spark = spark_session(settings)
    except DltoolError as e:
        return None, Check("spark", False, str(e), "check spark.master and that the cluster is reachable from here")
    sc = spark.sparkContext
    return spark, Check("spark", True, f"Spark {spark.version} on {sc.master} (application {sc.applicationId})")


def _slots(spark, config: ExperimentConfig | None) -> Check:
    from dltool.spark.barrier import wait_for_slots

    workers = (config.train.workers if config is not None and config.train is not None else None) or 1
    slots = wait_for_slots(spark, workers, patience_s=10.0)
    found = f"{slots} free task slot(s) for train.workers {workers}"
    if slots < workers:
        return Check("task slots", False, found, "lower train.workers (--workers) or add executors or cores: "
                     "a barrier stage needs one slot per worker")  # fmt: skip
    return Check("task slots", True, found)


def _dynamic_allocation(spark) -> Check:
    enabled = spark.conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true"
    if enabled:
        return Check("dynamic allocation", False, "spark.dynamicAllocation.enabled is true",
                     "set spark.dynamicAllocation.enabled=false for training: Spark refuses barrier stages with it")  # fmt: skip
    return Check("dynamic allocation", True, "off")


def _gpus(spark, settings: SparkSettings) -> Check:
    conf = {**dict(spark.sparkContext.getConf().getAll()), **{k: str(v) for k, v in settings.conf.items()}}
    wanted = conf.get("spark.task.resource.gpu.amount")
    if not wanted:
        return Check("gpus", True, "none asked for (spark.task.resource.gpu.amount unset): training runs on CPU")
    missing = [key for key in ("spark.executor.resource.gpu.amount", "spark.executor.resource.gpu.discoveryScript")
               if key not in conf and not spark.sparkContext.master.startswith("local")]  # fmt: skip
    if missing:
        return Check("gpus", False, f"spark.task.resource.gpu.amount={wanted} but {', '.join(missing)} unset",
                     "set the executor GPU amount and a discovery script (docs/training.md, GPUs)")  # fmt: skip
    return Check("gpus", True, f"{wanted} GPU(s) per task")


def _executors(spark) -> Check:
    """An executor's Python imports the dltool the driver runs (shipped or installed)."""
    import dltool

    def probe(_):
        import dltool as theirs

        yield theirs.__version__

    try:
        found = spark.sparkContext.parallelize([0], 1).mapPartitions(probe).collect()[0]
    except Exception as e:  # noqa: BLE001 - any failure of the probe task is the finding
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        return Check("executors", False, f"a task could not import dltool: {first}",
                     "install dltool's dependencies in the executors' Python (docs/cluster.md)")  # fmt: skip
    if found != dltool.__version__:
        return Check("executors", False, f"executors import dltool {found}, the driver runs {dltool.__version__}",
                     "ship or install the same dltool on the executors")  # fmt: skip
    return Check("executors", True, f"a task imports dltool {found}")


def _locations(config: ExperimentConfig) -> list[Check]:
    """The input readable, and the dataset and run dir locations writable (a probe file, removed at once)."""
    from dltool.storage.fs import open_location

    checks = []
    if config.ingest is not None:
        checks.append(_reachable("input", config.ingest.input, open_location))
    outputs = [("dataset", config.dataset.path)] + ([("run dir", config.train.run_dir)] if config.train else [])
    for name, uri in outputs:
        checks.append(_writable(name, uri, open_location))
    return checks


def _reachable(name: str, uri: str, open_location) -> Check:
    try:
        location = open_location(uri)
        ok = location.exists()
    except DltoolError as e:
        return Check(name, False, str(e), "fix the URI or the storage client's settings")
    if not ok:
        return Check(name, False, f"{location.uri} does not exist", "check ingest.input")
    return Check(name, True, f"{location.uri} is there")


def _writable(name: str, uri: str, open_location) -> Check:
    try:
        location = open_location(uri)
        probe = location.sibling(f".dltool-doctor-{uuid.uuid4().hex[:8]}")  # next to it, in its parent folder
        probe.fs.create_dir(probe.path.rsplit("/", 1)[0], recursive=True)  # as ingest and train would
        probe.write_bytes(b"")
        probe.delete()
    except (DltoolError, OSError) as e:
        return Check(name, False, f"{uri}: cannot write next to it: {str(e).splitlines()[0]}",
                     "fix the permissions or the storage credentials")  # fmt: skip
    return Check(name, True, f"{location.uri} is writable")
