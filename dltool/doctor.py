"""`dltool doctor`: a preflight of the machine and the cluster a config will run on, one line per check.

Each check says what it found and, when it fails, what to do. Nothing is written except a probe
file in each output location, removed at once.
"""

from __future__ import annotations

import platform
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
    if spark.sparkContext.master.startswith("yarn"):
        checks += _yarn(spark)
    if config is not None:
        checks += _locations(config)
    return checks


def versions() -> dict[str, str]:
    """dltool's version and those of what it runs on, from package metadata (no Spark or TensorFlow started)."""
    from importlib.metadata import PackageNotFoundError, version

    from dltool import __version__

    found = {"dltool": __version__, "python": platform.python_version()}
    for name, packages in (("spark", ["pyspark"]), ("tensorflow", ["tensorflow-cpu", "tensorflow"]), ("keras", ["keras"])):
        for package in packages:
            try:
                found[name] = version(package)
                break
            except PackageNotFoundError:
                found[name] = "not installed"
    java = _java()
    found["java"] = java.found if java.ok else f"{java.found}: {java.fix}"
    return found


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
    from dltool.train.barrier import wait_for_slots

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

    found, failed = _task_version(spark, "dltool")
    if failed:
        return Check("executors", False, f"a task could not import dltool: {failed}",
                     "install dltool's dependencies in the executors' Python (docs/cluster.md)")  # fmt: skip
    if found != dltool.__version__:
        return Check("executors", False, f"executors import dltool {found}, the driver runs {dltool.__version__}",
                     "ship or install the same dltool on the executors")  # fmt: skip
    return Check("executors", True, f"a task imports dltool {found}")


def _task_version(spark, module: str) -> tuple[str | None, str | None]:
    """(the version of `module` one Spark task imports, None) or (None, why the task failed)."""

    def probe(_):
        import importlib

        yield importlib.import_module(module).__version__

    try:
        return spark.sparkContext.parallelize([0], 1).mapPartitions(probe).collect()[0], None
    except Exception as e:  # noqa: BLE001 - any failure of the probe task is the finding
        return None, (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _yarn(spark) -> list[Check]:
    """On YARN: the queue exists and runs, containers fit the largest YARN grants, executors run a
    shipped Python that imports TensorFlow, and Spark's jars come from the cluster, not this machine."""
    sc, conf = spark.sparkContext, spark.sparkContext.getConf()
    hadoop_conf = sc._jsc.hadoopConfiguration()
    checks = []
    queue = conf.get("spark.yarn.queue", "default")
    try:
        client = sc._jvm.org.apache.hadoop.yarn.client.api.YarnClient.createYarnClient()
        client.init(hadoop_conf)
        client.start()
        try:
            info = client.getQueueInfo(queue)
            state = str(info.getQueueState()) if info is not None else None
        finally:
            client.stop()
    except Exception as e:  # noqa: BLE001 - the ResourceManager's answer (or its absence) is the finding
        state = f"unknown ({(str(e).strip().splitlines() or [type(e).__name__])[0][:200]})"
    if state == "RUNNING":
        checks.append(Check("yarn queue", True, f"{queue} is RUNNING"))
    else:
        checks.append(Check("yarn queue", False, f"{queue}: {state or 'no such queue'}",
                            "set spark.yarn.queue to a queue of this cluster (yarn queue -status NAME)"))  # fmt: skip
    largest = int(hadoop_conf.get("yarn.scheduler.maximum-allocation-mb", "8192"))
    memory = _megabytes(conf.get("spark.executor.memory", "1g"))
    overhead = _megabytes(conf.get("spark.executor.memoryOverhead", "0")) or max(384, memory // 10)
    python = _megabytes(conf.get("spark.executor.pyspark.memory", "0"))
    asked = memory + overhead + python
    found = f"executor containers of {asked} MB (memory {memory} + overhead {overhead} + pyspark {python}); YARN grants up to {largest} MB"
    checks.append(Check("yarn containers", asked <= largest, found, None if asked <= largest else
                        "lower spark.executor.memory / memoryOverhead, or raise yarn.scheduler.maximum-allocation-mb"))  # fmt: skip
    python_exec = conf.get("spark.pyspark.python", "")
    archives = conf.get("spark.yarn.dist.archives", "") + "," + conf.get("spark.archives", "")
    shipped = python_exec.startswith("./") and f"#{python_exec[2:].split('/', 1)[0]}" in archives
    checks.append(Check("yarn python", shipped, f"executors run {python_exec or 'python3 on the nodes PATH'}",
                        None if shipped else "pack the virtualenv (venv-pack -o env.tar), put it on HDFS and set "
                        "spark.yarn.dist.archives: hdfs:///PATH/env.tar#env and spark.pyspark.python: ./env/bin/python "
                        "(docs/cluster.md, YARN)"))  # fmt: skip
    jars = conf.get("spark.yarn.archive", "") or conf.get("spark.yarn.jars", "")
    checks.append(Check("yarn spark jars", bool(jars), jars or "uploaded from this machine for every application",
                        None if jars else "put Spark's jars on HDFS once and set spark.yarn.archive (docs/cluster.md, YARN)"))
    checks.append(_executor_tensorflow(spark))
    return checks


def _megabytes(value: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)b?\s*", str(value).lower())
    if not match:
        return 0
    number, unit = int(match.group(1)), match.group(2) or "m"
    return {"k": number // 1024, "m": number, "g": number * 1024, "t": number * 1024 * 1024}[unit]


def _executor_tensorflow(spark) -> Check:
    found, failed = _task_version(spark, "tensorflow")
    if failed:
        return Check("executor tensorflow", False, f"a task could not import TensorFlow: {failed}",
                     "ship a Python environment with TensorFlow (docs/cluster.md, YARN)")  # fmt: skip
    return Check("executor tensorflow", True, f"a task imports TensorFlow {found}")


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
