"""Build the SparkSession from the config, or reuse the one spark-submit started."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from dltool.config.models import SparkSettings
from dltool.errors import DltoolError, map_errors

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def java_available() -> bool:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return True
    return shutil.which("java") is not None


def spark_session(settings: SparkSettings, user_code: Path | None = None):
    """The active SparkSession if there is one (spark-submit, notebooks), else a new one from settings.

    On a cluster, dltool itself and the config's user code (see shipping.factory_code) are shipped
    to the executors.
    """
    from dltool.spark.shipping import ship_code

    spark = _session(settings)
    ship_code(spark, user_code)
    return spark


def _session(settings: SparkSettings):
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
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
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        # TensorFlow in Python workers (eval, predict) would print its CPU banner on stderr.
        "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "3",
    }
    if local:
        # Bind loopback (the machine's network address may be unroutable or firewalled), as
        # SPARK_LOCAL_IP would. Small local jobs: 200 shuffle partitions would be 200 near-empty tasks.
        conf.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                     "spark.sql.shuffle.partitions": str(2 * (os.cpu_count() or 2))})  # fmt: skip
    conf.update({key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in settings.conf.items()})
    builder = SparkSession.builder.master(settings.master).appName(settings.app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    with map_errors(f"starting Spark (master {settings.master})"):
        spark = builder.getOrCreate()
    if "PYSPARK_PYTHON" not in os.environ:
        # PySpark starts tasks' Python from PYSPARK_PYTHON (else `python3` on the PATH), never from
        # spark.pyspark.python: name it on this context rather than in this process's environment.
        spark.sparkContext.pythonExec = conf["spark.pyspark.python"]
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def default_parallelism(spark) -> int:
    return max(1, spark.sparkContext.defaultParallelism)
