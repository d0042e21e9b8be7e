"""The JVM class-data-sharing archive: which options a session gets, and adopting archives other runs wrote;
a master URL's local cores."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from dltool.spark.session import class_data_sharing


def _archive_dir(tmp_path):
    return tmp_path / "dltool" / "jvm"


def test_without_an_archive_the_jvm_writes_one_named_by_this_process(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    options = class_data_sharing()
    dump = next(o for o in options if o.startswith("-XX:ArchiveClassesAtExit="))
    assert dump.endswith(f".{os.getpid()}.tmp") and str(_archive_dir(tmp_path)) in dump
    assert "-Xlog:cds=off" in options  # a stale archive must never print on the CLI's stdout


def test_a_finished_archive_is_adopted_and_later_ones_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    dump = next(o for o in class_data_sharing() if o.startswith("-XX:ArchiveClassesAtExit=")).split("=", 1)[1]
    archive = dump.rsplit(".", 2)[0]
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(ended.stdout)  # a process that has exited
    old = time.time() - 120
    for pid, mtime in ((dead, old), (dead + 1_000_000, old), (os.getpid(), old)):
        path = f"{archive}.{pid}.tmp"
        with open(path, "wb") as f:
            f.write(b"archive")
        os.utime(path, (mtime, mtime))
    fresh = f"{archive}.{dead + 2_000_000}.tmp"  # ended, but written seconds ago: its JVM may still be writing
    with open(fresh, "wb") as f:
        f.write(b"archive")

    options = class_data_sharing()
    assert f"-XX:SharedArchiveFile={archive}" in options and "-Xshare:auto" in options
    left = sorted(p.name for p in _archive_dir(tmp_path).iterdir())
    # One finished dump became the archive, the other finished one is gone; the live and the fresh one stay.
    assert os.path.basename(archive) in left
    assert f"{os.path.basename(archive)}.{os.getpid()}.tmp" in left and os.path.basename(fresh) in left
    assert len(left) == 3


def test_an_archive_is_keyed_on_the_jars_spark_loads(tmp_path, monkeypatch):
    """A reinstalled pyspark (same version, jar files with new times) must not map the old archive:
    the JVM would ignore it silently, at every start."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    home = tmp_path / "spark"
    (home / "jars").mkdir(parents=True)
    jar = home / "jars" / "spark-core.jar"
    jar.write_bytes(b"classes")
    monkeypatch.setenv("SPARK_HOME", str(home))

    def archive_name():
        option = next(o for o in class_data_sharing() if o.startswith("-XX:ArchiveClassesAtExit="))
        return os.path.basename(option.split("=", 1)[1]).rsplit(".", 2)[0]

    before = archive_name()
    assert archive_name() == before  # stable while nothing changes
    os.utime(jar, (time.time() - 3600, time.time() - 3600))
    assert archive_name() != before


def test_only_the_newest_archives_are_kept(tmp_path):
    from dltool.spark.session import KEEP_ARCHIVES, _keep_newest

    for i in range(KEEP_ARCHIVES + 2):
        path = tmp_path / f"spark-4.0.0-{i}.jsa"
        path.write_bytes(b"archive")
        os.utime(path, (1000 + i, 1000 + i))
    _keep_newest(tmp_path, KEEP_ARCHIVES)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"spark-4.0.0-{i}.jsa" for i in range(2, KEEP_ARCHIVES + 2)]


def test_a_local_masters_cores_are_read_from_its_url():
    from dltool.spark.local import master_cores

    assert [master_cores(m) for m in ("local", "local[3]", "local[3, 2]", " local[1] ")] == [1, 3, 3, 1]
    assert master_cores("local[*]") == master_cores("local[*,4]") == (os.cpu_count() or 1)
    assert [master_cores(m) for m in ("local-cluster[2,1,1024]", "spark://h:7077", "yarn", "k8s://h", "locals")] == [0] * 5


def test_a_local_jvm_gets_the_parallel_collector_and_a_metaspace_threshold_unless_named_elsewhere(monkeypatch):
    from dltool.config.models import SparkSettings
    from dltool.spark.session import java_command, local_jvm_options

    for name in ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS"):
        monkeypatch.delenv(name, raising=False)
    options = local_jvm_options(SparkSettings())
    assert options == ["-XX:+UseParallelGC", "-XX:MetaspaceSize=256m"]
    flags = subprocess.run([java_command(), *options, "-XX:+PrintFlagsFinal", "-version"], capture_output=True, text=True)
    final = {line.split()[1]: line.split()[3] for line in flags.stdout.splitlines() if len(line.split()) >= 4}
    assert flags.returncode == 0 and final["UseParallelGC"] == "true" and final["MetaspaceSize"] == str(256 << 20)
    own = SparkSettings(conf={"spark.driver.defaultJavaOptions": "-XX:+UseZGC -XX:MetaspaceSize=64m"})
    assert local_jvm_options(own) == []
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-XX:+UseG1GC")  # a second collector would stop the JVM at start
    assert local_jvm_options(SparkSettings()) == ["-XX:MetaspaceSize=256m"]
    both = subprocess.run([java_command(), "-XX:+UseParallelGC", "-version"], capture_output=True, text=True)
    assert both.returncode != 0 and "Multiple garbage collectors" in both.stderr + both.stdout
