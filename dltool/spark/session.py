"""Build the SparkSession from the config, or reuse the one spark-submit started."""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dltool.config.models import SparkSettings
from dltool.errors import DltoolError, map_errors
from dltool.storage.stores import bind_storage, s3a_conf, storage_settings

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def java_available() -> bool:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return True
    return shutil.which("java") is not None


def java_command() -> str:
    """The java Spark will run: JAVA_HOME's, else the one on the PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java") or "java"


def spark_session(settings: SparkSettings, user_code: Path | None = None, warm: tuple[str, ...] = (),
                  warm_tensorflow: int = 0, sql: bool = True):  # fmt: skip
    """The active SparkSession if there is one (spark-submit, notebooks), else a new one from settings.

    On a cluster, dltool itself and the config's user code (see shipping.factory_code) are shipped
    to the executors. `warm`: modules the command's Python tasks will import; a new local session
    starts its Python workers importing them while the SQL session is still being built, and
    TensorFlow in `warm_tensorflow` of them (as many as the command's scoring tasks: each more
    would only compete for the cores). See `_warm_up`. `sql=False`, for a command whose jobs are
    all RDD jobs: where no SQL session is active, a `ContextOnly` in its place (see there).
    """
    from dltool.spark.shipping import ship_code

    spark = _session(settings, warm, warm_tensorflow, sql)
    ship_code(spark, user_code)
    bind_storage(spark)
    share_python_workers(spark.sparkContext)
    return spark


def share_python_workers(sc) -> None:
    """Let RDD jobs reuse the Python workers of SQL ones (mapInArrow), and the other way round.

    Spark keeps one pool of Python workers (and a daemon) per distinct set of task environment
    variables, and its SQL runner adds SPARK_SIMPLIFIED_TRACEBACK=1 where the RDD runner does not:
    an ingest that types rows in SQL and writes shards in an RDD job would start, and import
    into, a second set of workers (measured: 2-3 s per command). The same variable on the
    context's environment gives both runners one pool (and RDD tasks the shorter tracebacks).
    """
    sc.environment.setdefault("SPARK_SIMPLIFIED_TRACEBACK", "1")


@dataclass(frozen=True)
class ContextOnly:
    """The SparkContext alone, for a command whose Spark jobs are all RDD jobs (train, tune, eval, export).

    A new context's SQL session takes 1.5-2 s of the JVM's time to build (Spark ML's SQL functions are
    registered through Scala reflection), while the Python workers' warm-up waits for the same two
    cores: measured here, a scoring job finished 1.0-1.6 s sooner without it. Code that takes a
    session for its context takes this too; a later step in the process that needs SQL (`dltool run`'s
    ingest) builds the session on the same context.
    """

    sparkContext: Any


WARM_UP_GROUP = "dltool-warm-up"


def _warm_up(sc, modules: tuple[str, ...], tensorflow: int = 0) -> None:
    """Start a local context's Python workers (one per core) on a thread, importing `modules` in them.

    A command's first Python task otherwise waits for PySpark's worker daemon to start and for its
    own imports (2-3 s; with TensorFlow 5-8 s). Started as soon as the SparkContext is up, that work
    overlaps the SQL session's start and the driver's planning; the workers then serve the
    command's tasks (Spark reuses them). Failures are left to the real tasks, which report them.
    """
    import functools
    import threading

    slots = max(1, sc.defaultParallelism)

    def run() -> None:
        try:
            sc.setJobGroup(WARM_UP_GROUP, "start Python workers", False)
            sc.parallelize(range(slots), slots).foreach(functools.partial(_warm_worker, modules, tensorflow))
        except Exception:  # noqa: BLE001 - the session stopped, or a worker cannot start: the command will say
            pass

    threading.Thread(target=run, name="dltool-warm-up", daemon=True).start()


def _warm_worker(modules: tuple[str, ...], tensorflow: int, index: int) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the task that needs it raises the real error
            pass
    if index < tensorflow:
        try:
            from dltool.tfenv import task_tensorflow

            task_tensorflow()  # quietly, with the task's thread settings, as scoring tasks start it
        except Exception:  # noqa: BLE001 - the scoring task imports it again and reports the real error
            pass


def _session(settings: SparkSettings, warm: tuple[str, ...] = (), warm_tensorflow: int = 0, sql: bool = True):
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    context = SparkContext._active_spark_context
    if context is not None and not sql:  # an earlier command's, without SQL
        return ContextOnly(context)
    if "PYSPARK_GATEWAY_PORT" in os.environ:  # under spark-submit: its --master and --conf rule
        spark = SparkSession.builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        return spark
    if not java_available():
        raise DltoolError("Java not found: Spark needs Java 17+ (apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
    local = settings.master.startswith("local")
    conf = {
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        # A plan's text (kept for each adaptive update) grows with the columns times their expressions: a 785-column
        # table's auto roles made it gigabytes, and the driver ran out of heap. Past this length it is cut.
        "spark.sql.maxPlanStringLength": str(1 << 20),
        "spark.driver.extraJavaOptions": " ".join([f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                                                   *(class_data_sharing() if settings.jvm_cache else []),
                                                   *(local_jvm_options(settings) if local else [])]),
        # TensorFlow in Python workers (eval, predict) would print its CPU banner on stderr.
        "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "3",
    }
    if local:
        # Bind loopback (the machine's network address may be unroutable or firewalled), as
        # SPARK_LOCAL_IP would. Small local jobs: 200 shuffle partitions would be 200 near-empty tasks.
        # No web UI: a command shows its own progress, and the UI's start costs every command (and a
        # port); `--conf spark.ui.enabled=true` brings it back.
        conf.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                     "spark.sql.shuffle.partitions": str(2 * (os.cpu_count() or 2)), "spark.ui.enabled": "false"})  # fmt: skip
    conf.update(s3a_conf(storage_settings()))  # for Spark's own reads of s3a:// (where hadoop-aws is installed)
    conf.update({key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in settings.conf.items()})
    with map_errors(f"starting Spark (master {settings.master})"):
        # The context first, then the SQL session on it: Python workers can start in between.
        spark_conf = SparkConf().setMaster(settings.master).setAppName(settings.app_name).setAll(list(conf.items()))
        if context is None:
            sc = SparkContext(conf=spark_conf, gateway=_launch_jvm(spark_conf))
        else:
            sc = SparkContext.getOrCreate(spark_conf)
        if "PYSPARK_PYTHON" not in os.environ:
            # PySpark starts tasks' Python from PYSPARK_PYTHON (else `python3` on the PATH), never from
            # spark.pyspark.python: name it on this context rather than in this process's environment.
            sc.pythonExec = conf["spark.pyspark.python"]
        sc.setLogLevel("ERROR")
        if local and context is None:  # a context that exists has started its workers
            share_python_workers(sc)  # before the warm-up: its workers must be the ones later jobs use
            _warm_up(sc, warm, warm_tensorflow)
        spark = SparkSession.builder.getOrCreate() if sql else ContextOnly(sc)
    return spark


# Spark 4 starts every JVM with --add-modules=jdk.incubator.vector, and the JVM says so on stderr, one line of
# noise per command that no setting turns off.
JVM_NOISE = b"WARNING: Using incubator modules"


def _launch_jvm(conf):
    """Spark's driver JVM with its stderr passed on line by line, less the JVM's incubator-modules warning.

    The pipe is read from before the JVM starts, so a JVM that fails at start-up still shows why.
    """
    from pyspark.java_gateway import launch_gateway

    read_fd, write_fd = os.pipe()
    threading.Thread(target=_pass_on_stderr, args=(read_fd,), daemon=True, name="dltool-jvm-stderr").start()
    try:
        return launch_gateway(conf, popen_kwargs={"stderr": write_fd})
    finally:
        os.close(write_fd)  # the JVM (and the Python workers it forks) hold the only write ends now


def _pass_on_stderr(read_fd: int) -> None:
    with os.fdopen(read_fd, "rb") as pipe:
        for line in pipe:
            if not line.startswith(JVM_NOISE):
                try:
                    sys.stderr.write(line.decode("utf-8", errors="replace"))
                    sys.stderr.flush()
                except (ValueError, OSError):  # stderr closed at interpreter exit: nobody is left to read it
                    return


def local_jvm_options(settings: SparkSettings) -> list[str]:
    """JVM options for a local master's JVM, a batch job on the machine's few cores, each left out where the
    user's own options (JVM option variables, `spark.driver.defaultJavaOptions`) name the same thing:

    - the parallel garbage collector: G1, the JVM's default, spends cores on concurrent threads and
      write barriers to keep pauses short, and nobody waits on them here. Two collectors named at
      once stop the JVM at start.
    - a first metaspace threshold of 256 MB (MetaspaceSize): Spark's classes pass the JVM's default
      one (21 MB) and the next ones it sets, and each time the JVM collects the whole heap: three
      full collections, 0.4 s, in a 1M-row table's ingest.

    Measured here (2 cores), `dltool ingest` of that table from the shell against G1 with the default
    threshold, ten alternated pairs: 0.5 s less on average, 4% (docs/benchmarks.md).
    """
    # (A `spark.driver.extraJavaOptions` of the user's replaces dltool's whole string, these options with it.)
    named = " ".join([*(os.environ.get(v, "") for v in ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS")),
                      str(settings.conf.get("spark.driver.defaultJavaOptions", ""))])
    options = [] if re.search(r"-XX:[+]Use\w*GC\b", named) else ["-XX:+UseParallelGC"]
    return options + ([] if "MetaspaceSize" in named else ["-XX:MetaspaceSize=256m"])


def class_data_sharing() -> list[str]:
    """JVM options to start from dltool's archive of the classes Spark loads, or to write it at exit.

    A dynamic class-data-sharing archive (JDK 13+) skips loading and verifying ~20k classes:
    measured here, a local session starts in 2.9 s instead of 4.9 s and its first job takes
    0.9 s instead of 1.8 s. Each JVM without an archive writes its own at exit; the next start
    adopts a finished one. An archive that does not match this JDK or classpath is ignored by
    the JVM (silently: the cds log is off), so a wrong archive costs nothing but the speed-up.
    """
    import pyspark

    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dltool" / "jvm"
    if any(c.isspace() for c in str(folder)):  # extraJavaOptions is split on whitespace: start as usual
        return []
    archive = folder / f"spark-{pyspark.__version__}-{_java_key()}.jsa"
    quiet = ["-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
    _adopt_written(archive)
    if archive.exists():
        return [f"-XX:SharedArchiveFile={archive}", "-Xshare:auto", *quiet]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # no writable cache: start as usual
        return []
    return [f"-XX:ArchiveClassesAtExit={archive}.{os.getpid()}.tmp", *quiet]


def _java_key() -> str:
    """Which JDK and which jars will run: the JVM only maps an archive written by the same JDK build
    from the same jar files (it compares their sizes and times, and silently ignores a stale archive,
    so a reinstalled pyspark must get an archive of its own)."""
    import hashlib

    import pyspark

    java = os.path.realpath(java_command())
    h = hashlib.sha1(f"{java}:{os.stat(java).st_mtime_ns if os.path.exists(java) else 0}".encode())
    jars = Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent) / "jars"
    try:
        for jar in sorted(os.scandir(jars), key=lambda e: e.name):
            stat = jar.stat()
            h.update(f"{jar.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    except OSError:
        pass
    return h.hexdigest()[:10]


def _adopt_written(archive: Path) -> None:
    """Move an archive another run wrote into place, once its process has ended and the file is still;
    remove the other finished ones."""
    import time

    for written in sorted(archive.parent.glob(f"{archive.name}.*.tmp")):
        try:
            os.kill(int(written.name.rsplit(".", 2)[1]), 0)
            continue  # its run is still going
        except ProcessLookupError:
            pass
        except (ValueError, OSError):
            continue
        try:
            if time.time() - written.stat().st_mtime < 30:  # its JVM may still be writing (it outlives Python)
                continue
            if archive.exists():
                written.unlink()
            else:
                os.replace(written, archive)
                _keep_newest(archive.parent, KEEP_ARCHIVES)
        except OSError:
            continue


KEEP_ARCHIVES = 3  # archives of other installs (another venv, an older pyspark), newest first; ~100-200 MB each


def _keep_newest(folder: Path, keep: int) -> None:
    archives = sorted(folder.glob("spark-*.jsa"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in archives[keep:]:
        old.unlink(missing_ok=True)


def default_parallelism(spark) -> int:
    return max(1, spark.sparkContext.defaultParallelism)

